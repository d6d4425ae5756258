//! One node with three pods, wired as the node agent wires pods, for the NetworkPolicy tests:
//!
//! ```text
//!  pod netns a, b, c: eth0 10.244.0.11/.12/.13 (/32), default via 10.244.0.1
//!        │ veth (node side: 10.244.0.1/32, route to the pod's /32; tc_from_pod + tc_to_pod
//!        │       through the agent's own `PodTc` hook)
//!  node netns: blackhole 10.96.0.0/12, forwarding on
//!        │ veth 10.245.0.1/24 — no keelson program on it
//!  outside netns: 10.245.0.2/24, default via 10.245.0.1
//! ```
//!
//! Every pod answers on TCP 8080, 8081, 9090, 9091 and UDP 5353 with its name (threads of the
//! test process whose sockets live in the pod's namespace). Clients are threads that enter a
//! namespace, so a denied connection costs one short timeout. No namespace has a route to the
//! machine's uplink; all of it goes away on drop.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream, UdpSocket},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use keelson_node_agent::{
    datapath::lb::{LoadBalancer, PodTc},
    network::{PodHook as _, PodLink},
};

use crate::{lbkit::Pins, netns::NetNs, unique_name};

/// The pods' gateway: the node side of every pod veth.
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 1);
/// The node's address towards the outside namespace.
pub const NODE_OUTSIDE_ADDR: Ipv4Addr = Ipv4Addr::new(10, 245, 0, 1);
/// The outside client's address.
pub const OUTSIDE_ADDR: Ipv4Addr = Ipv4Addr::new(10, 245, 0, 2);
/// TCP ports every pod answers on.
pub const TCP_PORTS: [u16; 4] = [8080, 8081, 9090, 9091];
/// The UDP port every pod answers on.
pub const UDP_PORT: u16 = 5353;
/// How long a client waits for a connection or an answer.
pub const CLIENT_TIMEOUT: Duration = Duration::from_millis(800);

/// Pod `i`'s address (a = 0, b = 1, c = 2).
pub fn pod_addr(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 244, 0, 11 + i as u8)
}

/// Pod `i`'s name, as it answers.
pub fn pod_name(i: usize) -> String {
    format!("pod-{}", (b'a' + i as u8) as char)
}

/// A pod: its namespace and node-side veth.
#[derive(Debug)]
pub struct Pod {
    /// The pod's network namespace.
    pub ns: NetNs,
    /// The node-side veth.
    pub host_if: String,
    /// The pod's address.
    pub addr: Ipv4Addr,
}

/// The node, its pods and the outside client.
pub struct PolicyNode {
    /// The node's namespace (programs, routes).
    pub node: NetNs,
    /// The pods.
    pub pods: Vec<Pod>,
    /// A client outside the node, behind an interface without keelson's programs.
    pub outside: NetNs,
    /// The loaded datapath, shared with the pod hook as in the agent.
    pub lb: Arc<Mutex<LoadBalancer>>,
    /// The pinned maps (removed on drop, after the namespaces).
    pub pins: Pins,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for PolicyNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyNode")
            .field("node", &self.node)
            .field("pods", &self.pods)
            .finish_non_exhaustive()
    }
}

impl PolicyNode {
    /// Builds the node with `pods` pods; with `redirect`, pods are registered in `LOCAL_PODS`
    /// (packets between them skip the node's stack), as `--routing-bpf` does.
    pub fn new(pods: usize, redirect: bool) -> Self {
        let node = NetNs::new("kpn");
        node.exec(&[
            "sh",
            "-ec",
            "echo 1 > /proc/sys/net/ipv4/ip_forward; \
             echo 0 > /proc/sys/net/ipv4/conf/all/rp_filter; \
             echo 0 > /proc/sys/net/ipv4/conf/default/rp_filter; \
             ip route add blackhole 10.96.0.0/12",
        ]);
        let pins = Pins::new();
        let lb = {
            let _in_node = node.enter();
            LoadBalancer::load(&pins.config())
                .unwrap_or_else(|e| panic!("load: {}", crate::lbkit::error_chain(&e)))
        };
        let lb = Arc::new(Mutex::new(lb));
        let hook = {
            let _in_node = node.enter();
            PodTc::new(lb.clone(), redirect)
                .unwrap_or_else(|e| panic!("pod hook: {}", crate::lbkit::error_chain(&e)))
        };
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        let mut list = Vec::new();
        for i in 0..pods {
            let ns = NetNs::new("kpp");
            let host_if = unique_name("kph");
            let addr = pod_addr(i);
            crate::run(
                "ip",
                &[
                    "link",
                    "add",
                    &host_if,
                    "netns",
                    node.name(),
                    "type",
                    "veth",
                    "peer",
                    "name",
                    "eth0",
                    "netns",
                    ns.name(),
                ],
            );
            ns.exec(&[
                "sh",
                "-ec",
                &format!(
                    "ip link set eth0 up; ip addr add {addr}/32 dev eth0; \
                     ip route add {GATEWAY}/32 dev eth0; ip route add default via {GATEWAY}"
                ),
            ]);
            node.exec(&[
                "sh",
                "-ec",
                &format!(
                    "ip link set {host_if} up; ip addr add {GATEWAY}/32 dev {host_if}; \
                     ip route add {addr}/32 dev {host_if}; \
                     echo 0 > /proc/sys/net/ipv4/conf/{host_if}/rp_filter"
                ),
            ]);
            let mac = |ns: &NetNs, interface: &str| -> [u8; 6] {
                let out = ns.exec(&["cat", &format!("/sys/class/net/{interface}/address")]);
                let text = String::from_utf8_lossy(&out.stdout);
                let mut mac = [0u8; 6];
                for (byte, part) in mac.iter_mut().zip(text.trim().split(':')) {
                    *byte = u8::from_str_radix(part, 16).expect("a MAC address");
                }
                mac
            };
            let link = PodLink {
                address: addr,
                host_ifindex: {
                    let _in_node = node.enter();
                    nix::net::if_::if_nametoindex(host_if.as_str()).expect("the veth's index")
                },
                host_mac: mac(&node, &host_if),
                pod_mac: mac(&ns, "eth0"),
            };
            {
                let _in_node = node.enter();
                hook.veth_up(&host_if)
                    .unwrap_or_else(|e| panic!("attach to {host_if}: {e}"));
                hook.pod_up(&link)
                    .unwrap_or_else(|e| panic!("register {addr}: {e}"));
            }
            {
                let _in_pod = ns.enter();
                for port in TCP_PORTS {
                    let listener = TcpListener::bind(SocketAddrV4::new(addr, port))
                        .expect("bind a pod's TCP server");
                    threads.push(tcp_server(listener, pod_name(i), stop.clone()));
                }
                let socket = UdpSocket::bind(SocketAddrV4::new(addr, UDP_PORT)).expect("bind UDP");
                threads.push(udp_server(socket, pod_name(i), stop.clone()));
            }
            list.push(Pod { ns, host_if, addr });
        }
        let outside = NetNs::new("kpo");
        let (out_if, node_if) = (unique_name("kpx"), unique_name("kpy"));
        crate::run(
            "ip",
            &[
                "link",
                "add",
                &out_if,
                "netns",
                outside.name(),
                "type",
                "veth",
                "peer",
                "name",
                &node_if,
                "netns",
                node.name(),
            ],
        );
        outside.exec(&[
            "sh",
            "-ec",
            &format!(
                "ip link set {out_if} up; ip addr add {OUTSIDE_ADDR}/24 dev {out_if}; \
                 ip route add default via {NODE_OUTSIDE_ADDR}"
            ),
        ]);
        node.exec(&[
            "sh",
            "-ec",
            &format!(
                "ip link set {node_if} up; ip addr add {NODE_OUTSIDE_ADDR}/24 dev {node_if}; \
                 echo 0 > /proc/sys/net/ipv4/conf/{node_if}/rp_filter"
            ),
        ]);
        Self {
            node,
            pods: list,
            outside,
            lb,
            pins,
            stop,
            threads,
        }
    }

    /// The datapath's counters by name.
    pub fn metrics(&self) -> std::collections::BTreeMap<&'static str, u64> {
        self.lb
            .lock()
            .expect("the datapath lock")
            .metrics()
            .expect("metrics")
            .into_iter()
            .collect()
    }
}

impl Drop for PolicyNode {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// Runs `f` on a thread inside `ns` (sockets it creates stay in that namespace).
pub fn in_ns<T: Send + 'static>(ns: &NetNs, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = ns.path();
    std::thread::spawn(move || {
        let target = std::fs::File::open(&path).expect("open the namespace");
        nix::sched::setns(&target, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        f()
    })
    .join()
    .expect("the client thread")
}

/// One TCP connection from `ns` to `target`: the server's first line, or the error kind.
pub fn tcp(ns: &NetNs, target: SocketAddrV4) -> Result<String, std::io::ErrorKind> {
    in_ns(ns, move || {
        let stream = TcpStream::connect_timeout(&target.into(), CLIENT_TIMEOUT)?;
        stream.set_read_timeout(Some(CLIENT_TIMEOUT))?;
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line)?;
        Ok(line.trim().to_owned())
    })
    .map_err(|e: std::io::Error| e.kind())
}

/// One UDP datagram from `ns` to `target` and its answer: (who answered, text), or the error.
pub fn udp(ns: &NetNs, target: SocketAddrV4) -> Result<(String, String), std::io::ErrorKind> {
    in_ns(ns, move || {
        let socket = UdpSocket::bind("0.0.0.0:0")?;
        socket.set_read_timeout(Some(CLIENT_TIMEOUT))?;
        socket.send_to(b"ping", target)?;
        let mut buf = [0u8; 256];
        let (n, from) = socket.recv_from(&mut buf)?;
        Ok((
            from.to_string(),
            String::from_utf8_lossy(&buf[..n]).trim().to_owned(),
        ))
    })
    .map_err(|e: std::io::Error| e.kind())
}

/// A TCP connection held open: each [`Held::exchange`] sends a line and reads the answer.
#[derive(Debug)]
pub struct Held {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
    /// The server's first line.
    pub first: String,
}

impl Held {
    /// Connects from `ns` to `target` and reads the first line.
    pub fn open(ns: &NetNs, target: SocketAddrV4) -> Self {
        in_ns(ns, move || {
            let stream = TcpStream::connect_timeout(&target.into(), CLIENT_TIMEOUT)
                .unwrap_or_else(|e| panic!("connect {target}: {e}"));
            stream
                .set_read_timeout(Some(CLIENT_TIMEOUT))
                .expect("read timeout");
            let mut reader = BufReader::new(stream.try_clone().expect("clone the stream"));
            let mut first = String::new();
            reader
                .read_line(&mut first)
                .unwrap_or_else(|e| panic!("first line from {target}: {e}"));
            Held {
                stream,
                reader,
                first: first.trim().to_owned(),
            }
        })
    }

    /// One more request and answer on the connection.
    pub fn exchange(&mut self) -> Result<String, std::io::ErrorKind> {
        self.stream.write_all(b"again\n").map_err(|e| e.kind())?;
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => Err(std::io::ErrorKind::UnexpectedEof),
            Ok(_) => Ok(line.trim().to_owned()),
            Err(e) => Err(e.kind()),
        }
    }
}

/// A TCP server answering the connection's start and every line with `name`.
fn tcp_server(listener: TcpListener, name: String, stop: Arc<AtomicBool>) -> JoinHandle<()> {
    listener.set_nonblocking(true).expect("non-blocking");
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((stream, _)) => {
                    let name = name.clone();
                    let stop = stop.clone();
                    std::thread::spawn(move || crate::topology::serve_tcp(stream, &name, &stop));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    })
}

fn udp_server(socket: UdpSocket, name: String, stop: Arc<AtomicBool>) -> JoinHandle<()> {
    socket
        .set_read_timeout(Some(Duration::from_millis(50)))
        .expect("UDP read timeout");
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while !stop.load(Ordering::Relaxed) {
            if let Ok((_, from)) = socket.recv_from(&mut buf) {
                let _ = socket.send_to(name.as_bytes(), from);
            }
        }
    })
}
