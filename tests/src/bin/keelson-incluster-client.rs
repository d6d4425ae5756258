//! An in-cluster API client the end-to-end tests run inside a pod: kube-rs'
//! `Client::try_default()` (the service-account token, `ca.crt` and `KUBERNETES_SERVICE_*`,
//! nothing keelson-specific), then one request per argument:
//!
//! - `pods NS`: lists the pods of NS and prints `pods=<count>`;
//! - `secrets NS`: lists the secrets of NS and prints `secrets=<count>`.
//!
//! A failed request prints `error=<HTTP code> <message>` (the API's `Status`) and the program
//! goes on with the next one; it exits 0 once every request was answered, 2 when the client
//! could not be built.

use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::{Api, Client, api::ListParams};

async fn count<K>(client: &Client, namespace: &str) -> Result<usize, kube::Error>
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned,
    K::DynamicType: Default,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    Ok(api.list(&ListParams::default()).await?.items.len())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let client = match Client::try_default().await {
        Ok(client) => client,
        Err(error) => {
            println!("client-error={error}");
            return std::process::ExitCode::from(2);
        }
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        let [what, namespace] = pair else {
            println!("usage: keelson-incluster-client (pods|secrets) NS ...");
            return std::process::ExitCode::from(2);
        };
        let result = match what.as_str() {
            "pods" => count::<Pod>(&client, namespace).await,
            "secrets" => count::<Secret>(&client, namespace).await,
            other => {
                println!("unknown request {other}");
                return std::process::ExitCode::from(2);
            }
        };
        match result {
            Ok(n) => println!("{what}={n}"),
            Err(kube::Error::Api(status)) => println!("error={} {}", status.code, status.message),
            Err(error) => println!("error=0 {error}"),
        }
    }
    std::process::ExitCode::SUCCESS
}
