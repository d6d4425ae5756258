//! A small service topology in network namespaces this test creates:
//!
//! ```text
//!  client netns            node netns (router)                 server netns
//!  10.200.0.2  ── veth ──  10.200.0.1 | 10.201.0.1  ── veth ──  10.201.0.11, .12, … (backends)
//!  (test cgroup)           TC programs, blackhole 10.96.0.0/12
//! ```
//!
//! Backends are threads of the test process whose sockets live in the server namespace: TCP
//! answers every line (and the connection's start) with the backend's name; UDP answers every
//! datagram with it. Only the node namespace routes between the others, and it blackholes the
//! service range, so an untranslated service packet goes nowhere. No namespace has a route to the
//! machine's uplink.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    net::{Ipv4Addr, SocketAddrV4, TcpListener, UdpSocket},
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use crate::{cgroup::TestCgroup, netns::NetNs, run, unique_name};

/// The client's address.
pub const CLIENT_ADDR: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 2);
/// The node's address towards the client (where NodePorts answer).
pub const NODE_ADDR: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 1);
/// The node's address towards the backends.
pub const NODE_BACKEND_SIDE: Ipv4Addr = Ipv4Addr::new(10, 201, 0, 1);
/// The port every backend listens on (TCP and UDP).
pub const BACKEND_PORT: u16 = 8080;

/// Address of backend `i` (0-based).
pub fn backend_addr(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 201, 0, 11 + i as u8)
}

/// Name backend `i` answers with.
pub fn backend_name(i: usize) -> String {
    format!("backend-{i}")
}

/// The namespaces, the cgroup and the running backends.
#[derive(Debug)]
pub struct Topology {
    /// Where clients run.
    pub client: NetNs,
    /// The node: routes between client and server, hosts the TC programs.
    pub node: NetNs,
    /// The node's interface towards the client.
    pub node_client_if: String,
    /// The node's interface towards the backends.
    pub node_server_if: String,
    /// Where backends listen.
    pub server: NetNs,
    /// The cgroup clients run in.
    pub cgroup: TestCgroup,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Topology {
    /// Builds the namespaces and starts `backends` backends.
    pub fn new(backends: usize) -> Self {
        let client = NetNs::new("ktc");
        let node = NetNs::new("ktn");
        let server = NetNs::new("kts");
        let (vc, nc) = (unique_name("kvc"), unique_name("knc"));
        let (vs, ns) = (unique_name("kvs"), unique_name("kns"));
        for (ns_a, if_a, ns_b, if_b) in [(&client, &vc, &node, &nc), (&server, &vs, &node, &ns)] {
            run(
                "ip",
                &[
                    "link",
                    "add",
                    if_a,
                    "netns",
                    ns_a.name(),
                    "type",
                    "veth",
                    "peer",
                    "name",
                    if_b,
                    "netns",
                    ns_b.name(),
                ],
            );
        }
        client.exec(&[
            "ip",
            "addr",
            "add",
            &format!("{CLIENT_ADDR}/24"),
            "dev",
            &vc,
        ]);
        client.exec(&["ip", "link", "set", &vc, "up"]);
        client.exec(&[
            "ip",
            "route",
            "add",
            "default",
            "via",
            &NODE_ADDR.to_string(),
        ]);
        node.exec(&["ip", "addr", "add", &format!("{NODE_ADDR}/24"), "dev", &nc]);
        node.exec(&[
            "ip",
            "addr",
            "add",
            &format!("{NODE_BACKEND_SIDE}/24"),
            "dev",
            &ns,
        ]);
        node.exec(&["ip", "link", "set", &nc, "up"]);
        node.exec(&["ip", "link", "set", &ns, "up"]);
        node.exec(&["ip", "route", "add", "blackhole", "10.96.0.0/12"]);
        node.exec(&["sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"]);
        for i in 0..backends {
            server.exec(&[
                "ip",
                "addr",
                "add",
                &format!("{}/24", backend_addr(i)),
                "dev",
                &vs,
            ]);
        }
        server.exec(&["ip", "link", "set", &vs, "up"]);
        server.exec(&[
            "ip",
            "route",
            "add",
            "default",
            "via",
            &NODE_BACKEND_SIDE.to_string(),
        ]);

        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for i in 0..backends {
            let (tcp, udp) = {
                let _in_server = server.enter();
                let addr = SocketAddrV4::new(backend_addr(i), BACKEND_PORT);
                (
                    TcpListener::bind(addr).expect("bind a TCP backend"),
                    UdpSocket::bind(addr).expect("bind a UDP backend"),
                )
            };
            threads.push(spawn_tcp_backend(tcp, backend_name(i), false, stop.clone()));
            threads.push(spawn_udp_backend(udp, backend_name(i), false, stop.clone()));
        }
        Self {
            client,
            node,
            node_client_if: nc,
            node_server_if: ns,
            server,
            cgroup: TestCgroup::new(),
            stop,
            threads,
        }
    }

    /// A command running `keelson-test-client` in the client namespace and the test cgroup.
    pub fn client_command(&self, client_binary: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg(format!(
            "{}exec ip netns exec {} {client_binary} {}",
            self.cgroup.enter_snippet(),
            self.client.name(),
            args.join(" ")
        ));
        cmd
    }

    /// Runs the client to completion and returns its output lines.
    pub fn run_client(&self, client_binary: &str, args: &[&str]) -> Vec<String> {
        let output = self
            .client_command(client_binary, args)
            .output()
            .expect("run keelson-test-client");
        assert!(
            output.status.success(),
            "keelson-test-client {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Starts a client holding one TCP connection open (`hold` mode).
    pub fn hold(&self, client_binary: &str, target: SocketAddrV4) -> HeldConnection {
        HeldConnection::spawn(self.client_command(client_binary, &["hold", &target.to_string()]))
    }
}

impl HeldConnection {
    fn spawn(mut command: Command) -> Self {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn keelson-test-client hold");
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut held = HeldConnection {
            child,
            stdin: Some(stdin),
            stdout,
            first: String::new(),
        };
        held.first = held.next_line();
        held
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// A client process holding one connection; each [`HeldConnection::exchange`] sends a line and
/// returns the reply line the client printed.
#[derive(Debug)]
pub struct HeldConnection {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    /// The first exchange (`peer=… reply=…`).
    pub first: String,
}

impl HeldConnection {
    /// One more request/response on the same connection.
    pub fn exchange(&mut self) -> String {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin.write_all(b"go\n").expect("write to the held client");
        stdin.flush().expect("flush the held client");
        self.next_line()
    }

    fn next_line(&mut self) -> String {
        let mut line = String::new();
        self.stdout
            .read_line(&mut line)
            .expect("read from the held client");
        line.trim().to_owned()
    }
}

impl Drop for HeldConnection {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP backend answering with `name` (and ` from=<peer>` when `show_peer`).
fn spawn_tcp_backend(
    listener: TcpListener,
    name: String,
    show_peer: bool,
    stop: Arc<AtomicBool>,
) -> JoinHandle<()> {
    listener
        .set_nonblocking(true)
        .expect("non-blocking listener");
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((stream, peer)) => {
                    let name = if show_peer {
                        format!("{name} from={peer}")
                    } else {
                        name.clone()
                    };
                    let stop = stop.clone();
                    std::thread::spawn(move || serve_tcp(stream, &name, &stop));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    })
}

/// Answers each line read on `stream` with `name` (and `name` once at the start) until `stop`.
pub(crate) fn serve_tcp(stream: std::net::TcpStream, name: &str, stop: &AtomicBool) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let mut writer = match stream.try_clone() {
        Ok(w) => w,
        Err(_) => return,
    };
    if writeln!(writer, "{name}").is_err() {
        return;
    }
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    while !stop.load(Ordering::Relaxed) {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) => return,
            Ok(_) => {
                if writeln!(writer, "{name}").is_err() {
                    return;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
    }
}

/// A UDP backend answering every datagram with `name` (and ` from=<peer>` when `show_peer`).
fn spawn_udp_backend(
    socket: UdpSocket,
    name: String,
    show_peer: bool,
    stop: Arc<AtomicBool>,
) -> JoinHandle<()> {
    socket
        .set_read_timeout(Some(Duration::from_millis(50)))
        .expect("UDP read timeout");
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while !stop.load(Ordering::Relaxed) {
            if let Ok((_, from)) = socket.recv_from(&mut buf) {
                let answer = if show_peer {
                    format!("{name} from={from}")
                } else {
                    name.clone()
                };
                let _ = socket.send_to(answer.as_bytes(), from);
            }
        }
    })
}

/// Two nodes and an external client, for NodePort traffic to backends on the other node:
///
/// ```text
///  client netns          node netns (programs)                 remote netns          backend netns
///  10.210.0.2, .3 ─ veth ─ 10.210.0.1 (uplink)
///                          10.212.0.1 ─────────── veth ─────── 10.212.0.2
///                          route 10.213.0.0/24 via 10.212.0.2   10.213.0.1 ── veth ── 10.213.0.11, .12
///                          blackhole 10.96.0.0/12
/// ```
///
/// The remote node knows only its two links: it has no route to the client, so a backend's
/// answer reaches the client only if the node rewrote the request's source to its own address
/// (SNAT). Backends answer with their name and the peer they see (`backend-0 from=IP:PORT`). No
/// namespace has a route to the machine's uplink.
#[derive(Debug)]
pub struct TwoNodeTopology {
    /// The external client (two addresses: [`EXTERNAL_CLIENTS`]).
    pub client: NetNs,
    /// The node whose uplink carries the programs.
    pub node: NetNs,
    /// The node's interface towards the client.
    pub node_uplink_if: String,
    /// The node's interface towards the remote node.
    pub node_remote_if: String,
    /// The other node, routing to its pods.
    pub remote: NetNs,
    /// The remote node's pods.
    pub backends: NetNs,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

/// The external client's addresses.
pub const EXTERNAL_CLIENTS: [Ipv4Addr; 2] =
    [Ipv4Addr::new(10, 210, 0, 2), Ipv4Addr::new(10, 210, 0, 3)];
/// The node's uplink address (where NodePorts answer).
pub const NODE_UPLINK_ADDR: Ipv4Addr = Ipv4Addr::new(10, 210, 0, 1);
/// The node's address towards the remote node (the SNAT source the backends see).
pub const NODE_INTERNAL_ADDR: Ipv4Addr = Ipv4Addr::new(10, 212, 0, 1);
/// The remote node's address.
pub const REMOTE_NODE_ADDR: Ipv4Addr = Ipv4Addr::new(10, 212, 0, 2);

/// Address of remote backend `i` (0-based).
pub fn remote_backend_addr(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 213, 0, 11 + i as u8)
}

impl TwoNodeTopology {
    /// Builds the namespaces and starts `backends` backends (TCP and UDP on [`BACKEND_PORT`]).
    pub fn new(backends: usize) -> Self {
        let client = NetNs::new("kxc");
        let node = NetNs::new("kxn");
        let remote = NetNs::new("kxr");
        let pods = NetNs::new("kxb");
        let (c_if, n_up) = (unique_name("kxc"), unique_name("kxu"));
        let (n_rm, r_n) = (unique_name("kxi"), unique_name("kxj"));
        let (r_b, b_if) = (unique_name("kxp"), unique_name("kxq"));
        for (ns_a, if_a, ns_b, if_b) in [
            (&client, &c_if, &node, &n_up),
            (&node, &n_rm, &remote, &r_n),
            (&remote, &r_b, &pods, &b_if),
        ] {
            run(
                "ip",
                &[
                    "link",
                    "add",
                    if_a,
                    "netns",
                    ns_a.name(),
                    "type",
                    "veth",
                    "peer",
                    "name",
                    if_b,
                    "netns",
                    ns_b.name(),
                ],
            );
        }
        let sh = |ns: &NetNs, script: &str| {
            ns.exec(&["sh", "-ec", script]);
        };
        let [c1, c2] = EXTERNAL_CLIENTS;
        sh(
            &client,
            &format!(
                "ip addr add {c1}/24 dev {c_if}; ip addr add {c2}/24 dev {c_if}; \
                 ip link set {c_if} up; ip route add default via {NODE_UPLINK_ADDR}"
            ),
        );
        sh(
            &node,
            &format!(
                "ip addr add {NODE_UPLINK_ADDR}/24 dev {n_up}; ip link set {n_up} up; \
                 ip addr add {NODE_INTERNAL_ADDR}/24 dev {n_rm}; ip link set {n_rm} up; \
                 ip route add 10.213.0.0/24 via {REMOTE_NODE_ADDR}; \
                 ip route add blackhole 10.96.0.0/12; \
                 echo 1 > /proc/sys/net/ipv4/ip_forward"
            ),
        );
        sh(
            &remote,
            &format!(
                "ip addr add {REMOTE_NODE_ADDR}/24 dev {r_n}; ip link set {r_n} up; \
                 ip addr add 10.213.0.1/24 dev {r_b}; ip link set {r_b} up; \
                 echo 1 > /proc/sys/net/ipv4/ip_forward"
            ),
        );
        let mut script = String::new();
        for i in 0..backends {
            script.push_str(&format!(
                "ip addr add {}/24 dev {b_if}; ",
                remote_backend_addr(i)
            ));
        }
        script.push_str(&format!(
            "ip link set {b_if} up; ip route add default via 10.213.0.1"
        ));
        sh(&pods, &script);

        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for i in 0..backends {
            let (tcp, udp) = {
                let _in_pods = pods.enter();
                let addr = SocketAddrV4::new(remote_backend_addr(i), BACKEND_PORT);
                (
                    TcpListener::bind(addr).expect("bind a TCP backend"),
                    UdpSocket::bind(addr).expect("bind a UDP backend"),
                )
            };
            threads.push(spawn_tcp_backend(tcp, backend_name(i), true, stop.clone()));
            threads.push(spawn_udp_backend(udp, backend_name(i), true, stop.clone()));
        }
        Self {
            client,
            node,
            node_uplink_if: n_up,
            node_remote_if: n_rm,
            remote,
            backends: pods,
            stop,
            threads,
        }
    }

    /// A command running `keelson-test-client` in the client namespace.
    pub fn client_command(&self, client_binary: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", self.client.name(), client_binary])
            .args(args);
        cmd
    }

    /// Runs the client to completion and returns its output lines.
    pub fn run_client(&self, client_binary: &str, args: &[&str]) -> Vec<String> {
        let output = self
            .client_command(client_binary, args)
            .output()
            .expect("run keelson-test-client");
        assert!(
            output.status.success(),
            "keelson-test-client {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Starts a client holding one TCP connection open from `from` (`hold` mode).
    pub fn hold_from(
        &self,
        client_binary: &str,
        target: SocketAddrV4,
        from: SocketAddrV4,
    ) -> HeldConnection {
        HeldConnection::spawn(self.client_command(
            client_binary,
            &["hold", &target.to_string(), &from.to_string()],
        ))
    }
}

impl Drop for TwoNodeTopology {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}
