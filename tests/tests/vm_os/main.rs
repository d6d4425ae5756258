//! keelson installed as a user installs it, on a real OS: Debian 12 (systemd as init, pure
//! cgroup v2, docker.io from apt) in a qemu VM, the packages `cargo xtask dist` builds installed
//! with dpkg, the node joined with a token to a control plane on the host, which listens on the
//! address of a bridge this test creates (the VM's NIC is a tap on it). Each step is timed and
//! printed; a failing step panics naming itself:
//!
//! 1. boot → ssh; the root is cgroup2 alone (`/sys/fs/cgroup` is cgroup2fs);
//! 2. `dpkg -i` both packages (nothing is enabled), `docker load` the test images;
//! 3. `keelson-control-plane token create` on the host, its join line run over ssh,
//!    `systemctl enable --now keelson-node-agent`; the Node becomes Ready;
//! 4. a Deployment and Services from kubectl; the ClusterIP answers a process on the VM
//!    (socket-LB at the real cgroup2 root) and a pod (its logs); the NodePort answers the host;
//! 5. `systemctl restart keelson-node-agent` under request loops (VM → ClusterIP, host →
//!    NodePort) loses no request and leaves the pods' containers running;
//! 6. `systemctl reboot`: the node is back, its pods serve again;
//! 7. `systemctl stop` + `keelson-node-agent reset`: links, routes, eBPF programs, links and
//!    cgroup attachments, containers and `/sys/fs/bpf/keelson` are as before the join.
//!
//! `cargo xtask vm-test --os` builds the packages, the image (cached under
//! /var/cache/keelson/vm-os) and the images tarball and runs this binary with `KEELSON_VM_OS_*`
//! set; nextest's default filter leaves it out. The VM, the tap, the bridge, the route and the
//! run's copy of the disk are removed on every exit path (the guard's `Drop`, also on panic).

use std::{
    net::{Ipv4Addr, SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use keelson_testbed::{http_get, kubectl_binary, runs};
use keelson_tests::{netcluster::claim_subnet, netcluster::echo_manifest, require_root};

mod harness;

use harness::*;

#[test]
fn debian12_node_joins_serves_restarts_reboots_and_resets() {
    require_root();
    let rootfs = env_path("KEELSON_VM_OS_ROOTFS");
    let kernel = env_path("KEELSON_VM_OS_KERNEL");
    let initrd = env_path("KEELSON_VM_OS_INITRD");
    let key = env_path("KEELSON_VM_OS_SSH_KEY");
    let debs_dir = env_path("KEELSON_VM_OS_DEBS");
    let images = env_path("KEELSON_VM_OS_IMAGES");
    let run_dir = env_path("KEELSON_VM_OS_RUN_DIR");
    let control_plane = env_path("KEELSON_VM_OS_CONTROL_PLANE");
    let accel = std::env::var("KEELSON_VM_ACCEL").unwrap_or_else(|_| "tcg".to_owned());
    let cpus = std::env::var("KEELSON_VM_OS_CPUS").unwrap_or_else(|_| "2".to_owned());

    let (subnet, _lock) = claim_subnet();
    let bridge = format!("kbos{subnet}");
    let tap = format!("kbos{subnet}t");
    let host_address = Ipv4Addr::new(172, 30, subnet, 1);
    let vm = Vm {
        address: Ipv4Addr::new(172, 30, subnet, 10),
        key,
    };
    std::fs::create_dir_all(&run_dir).expect("create the run directory");
    Host::remove_leftovers(&run_dir, &bridge, &tap);
    let steps = Steps {
        console: run_dir.join("console.log"),
        control_plane_log: run_dir.join("control-plane.log"),
        vm: vm.clone(),
    };
    let mut host = Host {
        run_dir: run_dir.clone(),
        bridge: bridge.clone(),
        tap: tap.clone(),
        disk: run_dir.join("rootfs.ext4"),
        qemu: None,
        control_plane: None,
        route: false,
    };
    let debs: Vec<PathBuf> = std::fs::read_dir(&debs_dir)
        .expect("read the packages' directory")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "deb"))
        .collect();
    assert_eq!(
        debs.len(),
        2,
        "{} should hold the two packages: {debs:?}",
        debs_dir.display()
    );

    // The host's side: bridge, tap, the blackhole route, the control plane on the bridge.
    steps.run("network: bridge, tap, blackhole route", || {
        ip(&["link", "add", &bridge, "type", "bridge"])?;
        ip(&["addr", "add", &format!("{host_address}/24"), "dev", &bridge])?;
        ip(&["link", "set", &bridge, "up"])?;
        ip(&["tuntap", "add", "dev", &tap, "mode", "tap"])?;
        ip(&["link", "set", &tap, "master", &bridge, "up"])?;
        // Replaces one a killed run left.
        ip(&["route", "replace", "blackhole", CLUSTER_CIDR])?;
        host.route = true;
        Ok(())
    });
    let cp_dir = run_dir.join("control-plane");
    let api = SocketAddr::from((host_address, 6443));
    let cp_args = |cmd: &mut Command| {
        cmd.arg("--data-dir")
            .arg(&cp_dir)
            .args(["--listen", &api.to_string()]);
    };
    steps.run("control plane on the bridge address", || {
        let _ = std::fs::remove_dir_all(&cp_dir);
        let log = std::fs::File::create(&steps.control_plane_log).map_err(|e| e.to_string())?;
        let mut cmd = Command::new(&control_plane);
        cp_args(&mut cmd);
        cmd.args(["--advertise-address", &host_address.to_string()])
            .args(["--cluster-cidr", CLUSTER_CIDR])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log);
        let child = cmd.spawn().map_err(|e| format!("cannot start: {e}"))?;
        host.remember("control-plane", child.id());
        let pid = child.id();
        wait_for(Duration::from_secs(60), "the API server to listen", || {
            if !runs(pid, CONTROL_PLANE) {
                return Err("keelson-control-plane exited".to_owned());
            }
            Ok(cp_dir.join("admin.kubeconfig").is_file()
                && TcpStream::connect_timeout(&api, Duration::from_secs(1)).is_ok())
        })
    });
    let kubectl = Kubectl {
        binary: kubectl_binary().expect("kubectl"),
        kubeconfig: cp_dir.join("admin.kubeconfig"),
    };

    // 1. boot → ssh.
    let boot_started = Instant::now();
    steps.run("boot: sparse copy of the image, qemu", || {
        let out = Command::new("cp")
            .arg("--sparse=always")
            .arg(&rootfs)
            .arg(&host.disk)
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!("cp failed: {}", text(&out)));
        }
        let console = std::fs::File::create(&steps.console).map_err(|e| e.to_string())?;
        let append = format!(
            "root=/dev/vda rw console=ttyS0 net.ifnames=0 panic=-1 \
             ip={}:::255.255.255.0:{NODE_NAME}:eth0:off",
            vm.address
        );
        let child: Child = Command::new(QEMU)
            .args(["-accel", &accel, "-m", "2048", "-smp", &cpus, "-nographic"])
            .arg("-kernel")
            .arg(&kernel)
            .arg("-initrd")
            .arg(&initrd)
            .args(["-append", &append])
            .arg("-drive")
            .arg(format!(
                "file={},format=raw,if=virtio,cache=unsafe",
                host.disk.display()
            ))
            .args([
                "-netdev",
                &format!("tap,id=uplink,ifname={tap},script=no,downscript=no"),
                "-device",
                &format!("virtio-net-pci,netdev=uplink,mac=52:54:00:31:{subnet:02x}:0a"),
                "-device",
                "virtio-rng-pci",
            ])
            .stdin(Stdio::null())
            .stdout(console.try_clone().map_err(|e| e.to_string())?)
            .stderr(console)
            .spawn()
            .map_err(|e| format!("cannot start {QEMU}: {e}"))?;
        host.remember("qemu", child.id());
        Ok(())
    });
    steps.run("boot → ssh", || vm.wait_ssh(Duration::from_secs(420)));
    let boot_to_ssh = boot_started.elapsed();
    steps.run("pure cgroup v2, systemd, docker", || {
        // Docker may still be starting when sshd already answers.
        wait_for(
            Duration::from_secs(240),
            "docker.service to be active",
            || {
                Ok(vm
                    .ssh("systemctl is-active docker")
                    .is_ok_and(|s| s.trim() == "active"))
            },
        )?;
        let out = vm.ssh("stat -fc %T /sys/fs/cgroup; cat /proc/1/comm; uname -r")?;
        eprintln!(
            "vm_os: VM: {}",
            out.split_whitespace().collect::<Vec<_>>().join(" ")
        );
        let mut lines = out.lines();
        if lines.next() != Some("cgroup2fs") || lines.next() != Some("systemd") {
            return Err(format!(
                "expected cgroup2 alone at /sys/fs/cgroup and systemd as PID 1:\n{out}"
            ));
        }
        Ok(())
    });

    // 2. The packages and the images.
    steps.run("scp the packages and the images tarball", || {
        let mut files: Vec<&Path> = debs.iter().map(PathBuf::as_path).collect();
        files.push(&images);
        vm.scp(&files, "/root/")
    });
    steps.run("dpkg -i (nothing enabled)", || {
        let out = vm.ssh("dpkg -i /root/*.deb 2>&1")?;
        eprintln!("{}", out.trim());
        vm.ssh(
            "systemd-analyze verify keelson-node-agent.service keelson-control-plane.service 2>&1",
        )
        .map_err(|e| format!("the installed units do not verify: {e}"))?;
        let state = vm.ssh(
            "systemctl is-enabled keelson-node-agent keelson-control-plane || true; \
             test -f /etc/keelson/node-agent.yaml && echo config",
        )?;
        if state.split_whitespace().collect::<Vec<_>>() != ["disabled", "disabled", "config"] {
            return Err(format!(
                "after dpkg -i both units should be disabled and the config in place:\n{state}"
            ));
        }
        Ok(())
    });
    steps.run("docker load", || {
        vm.ssh("docker load -i /root/images.tar && rm /root/images.tar")
            .map(drop)
    });
    let baseline = steps
        .run("what the host holds before the join", || vm.ssh(LEFTOVERS))
        .0;

    // 3. Join with a token.
    let join_line = steps
        .run("token create (host)", || {
            token_create(&control_plane, &cp_args, api)
        })
        .0;
    let (_, join_time) = steps.run("join (on the VM)", || {
        vm.ssh(&format!("{join_line} 2>&1"))?;
        name_address_and_uplink(&vm)
    });
    steps.run("systemctl enable --now keelson-node-agent", || {
        vm.ssh("systemctl enable --now keelson-node-agent 2>&1")
            .map_err(|e| {
                let status = vm
                    .ssh("systemctl status --no-pager -n 30 keelson-node-agent 2>&1; true")
                    .unwrap_or_default();
                format!("{e}\n{status}")
            })
            .map(drop)
    });
    steps.run("Node Ready", || {
        wait_for(Duration::from_secs(180), "the Node to be Ready", || {
            kubectl.node_ready()
        })
    });
    let boot_to_ready = boot_started.elapsed();

    // 4. Services.
    steps.run("Deployment + Services (kubectl apply)", || {
        kubectl.run(&["apply", "-f", "-"], Some(&echo_manifest(REPLICAS)))?;
        kubectl.run(&["apply", "-f", "-"], Some(&node_port_manifest()))?;
        Ok(())
    });
    let (pods, _) = steps.run("echo pods Ready", || {
        let mut pods = Vec::new();
        wait_for(
            Duration::from_secs(300),
            "the echo pods to be Ready",
            || {
                pods = kubectl.ready_echo_pods()?;
                Ok(pods.len() == REPLICAS)
            },
        )?;
        Ok(pods)
    });
    let cluster_ip = kubectl
        .run(
            &["get", "service", "echo", "-o", "jsonpath={.spec.clusterIP}"],
            None,
        )
        .expect("the echo Service's ClusterIP");
    let cluster_url = format!("http://{cluster_ip}/");
    let node_port = SocketAddr::from((vm.address, NODE_PORT));
    steps.run("ClusterIP from a process on the VM (socket-LB)", || {
        ask_from_vm(&vm, &cluster_url, 10, &pods)
    });
    steps.run("ClusterIP from a pod", || {
        kubectl.run(
            &["apply", "-f", "-"],
            Some(&client_pod_manifest(&cluster_ip)),
        )?;
        wait_for(Duration::from_secs(180), "the client pod to finish", || {
            let pod = kubectl.json(&["get", "pod", "client"])?;
            Ok(matches!(
                pod["status"]["phase"].as_str(),
                Some("Succeeded" | "Failed")
            ))
        })?;
        let logs = kubectl.run(&["logs", "client"], None)?;
        check_answers(&logs, 5, &pods)
    });
    steps.run("NodePort from the host", || {
        node_port_from_host(node_port, 10, &pods)
    });

    // 5. Restart under load.
    steps.run("systemctl restart under request loops", || {
        let containers = "docker ps -q --no-trunc | sort";
        let before = vm.ssh(containers)?;
        let stop = Arc::new(AtomicBool::new(false));
        let host_loop = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let (mut ok, mut failed) = (0_u32, Vec::new());
                for _ in 0..600 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    match http_get(node_port, "/", Duration::from_secs(3), Duration::from_secs(3)) {
                        Ok(body) if !body.trim().is_empty() => ok += 1,
                        Ok(_) => failed.push("empty answer".to_owned()),
                        Err(e) => failed.push(e.to_string()),
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                (ok, failed)
            })
        };
        let out = vm.ssh(&format!(
            "rm -f /tmp/keelson-stop; ({}) > /tmp/keelson-loop & sleep 2; \
             systemctl restart keelson-node-agent; sleep 3; touch /tmp/keelson-stop; wait; \
             cat /tmp/keelson-loop",
            vm_loop(&cluster_url)
        ));
        stop.store(true, Ordering::Relaxed);
        let (host_ok, host_failed) = host_loop.join().map_err(|_| "the host loop panicked")?;
        let out = out?;
        eprintln!(
            "vm_os: during the restart: VM → ClusterIP: {}; host → NodePort: ok {host_ok} failed {}",
            out.trim(),
            host_failed.len()
        );
        if !out.trim().ends_with("failed 0") || host_ok == 0 || !host_failed.is_empty() {
            return Err(format!(
                "requests were lost: VM loop `{}`, host failures {host_failed:?}",
                out.trim()
            ));
        }
        let after = vm.ssh(containers)?;
        if before != after {
            return Err(format!(
                "the restart changed the pods' containers:\nbefore\n{before}after\n{after}"
            ));
        }
        Ok(())
    });

    // 6. Reboot.
    let (_, reboot_to_ready) = steps.run("systemctl reboot → Ready, pods serving", || {
        // The connection may drop before ssh reports; the VM going away is what counts.
        let _ = vm.ssh("systemctl reboot");
        wait_for(Duration::from_secs(120), "the VM to go down", || {
            Ok(vm.ssh("true").is_err())
        })?;
        vm.wait_ssh(Duration::from_secs(420))?;
        wait_for(Duration::from_secs(300), "the agent and the pods", || {
            let active = vm
                .ssh("systemctl is-active keelson-node-agent")
                .is_ok_and(|s| s.trim() == "active");
            Ok(active
                && kubectl.node_ready()?
                && kubectl.ready_echo_pods()?.len() == REPLICAS
                && vm.ssh(&format!("curl -sf -m 3 {cluster_url}")).is_ok())
        })?;
        let pods = kubectl.ready_echo_pods()?;
        ask_from_vm(&vm, &cluster_url, 5, &pods)?;
        node_port_from_host(node_port, 5, &pods)
    });

    // 7. Reset.
    steps.run("systemctl stop + keelson-node-agent reset", || {
        kubectl.run(&["delete", "pod", "client", "--wait=false"], None)?;
        let out = vm.ssh("systemctl stop keelson-node-agent && keelson-node-agent reset 2>&1")?;
        eprintln!("{}", out.trim());
        let after = vm.ssh(LEFTOVERS)?;
        if after != baseline {
            return Err(format!(
                "reset left something behind:\n--- before the join ---\n{baseline}\n--- after reset ---\n{after}"
            ));
        }
        vm.ssh("test ! -e /etc/keelson/node.kubeconfig")
            .map_err(|_| "reset left /etc/keelson/node.kubeconfig".to_owned())
            .map(drop)
    });

    eprintln!(
        "vm_os: figures: boot → ssh {:.0} s, join {:.1} s, boot → Ready {:.0} s, reboot → Ready {:.0} s",
        boot_to_ssh.as_secs_f64(),
        join_time.as_secs_f64(),
        boot_to_ready.as_secs_f64(),
        reboot_to_ready.as_secs_f64()
    );
    drop(host);
}
