//! Which address the control plane advertises: what the serving certificate, the `kubernetes`
//! Service's endpoints and join commands carry. As kube-apiserver chooses it: the
//! `--advertise-address` flag, else the bind address when it is a specific one, else the
//! address of the interface holding the default route, else 127.0.0.1.

use std::net::{IpAddr, Ipv4Addr};

/// The advertised address for `--advertise-address` `flag` and the address served on.
pub(crate) fn advertise(flag: Option<IpAddr>, bind: IpAddr) -> IpAddr {
    flag.or_else(|| (!bind.is_unspecified()).then_some(bind))
        .or_else(default_route_address)
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

/// The first IPv4 address of the interface holding the IPv4 default route.
fn default_route_address() -> Option<IpAddr> {
    let table = std::fs::read_to_string("/proc/net/route").ok()?;
    let interface = default_route_interface(&table)?;
    nix::ifaddrs::getifaddrs().ok()?.find_map(|a| {
        (a.interface_name == interface)
            .then(|| a.address?.as_sockaddr_in().map(|v4| IpAddr::V4(v4.ip())))
            .flatten()
    })
}

/// The interface of the default route with the lowest metric in `/proc/net/route`'s table
/// (columns Iface, Destination, Gateway, Flags, RefCnt, Use, Metric, Mask, ...; hex fields).
fn default_route_interface(table: &str) -> Option<String> {
    const RTF_UP: u32 = 0x1;
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [
                interface,
                destination,
                _gateway,
                flags,
                _refcnt,
                _use,
                metric,
                mask,
                ..,
            ] = fields.as_slice()
            else {
                return None;
            };
            let flags = u32::from_str_radix(flags, 16).ok()?;
            let metric: u32 = metric.parse().ok()?;
            (*destination == "00000000" && *mask == "00000000" && flags & RTF_UP != 0)
                .then(|| (metric, (*interface).to_owned()))
        })
        .min()
        .map(|(_, interface)| interface)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str =
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n";

    #[test]
    fn the_default_route_with_the_lowest_metric_wins() {
        let cases = [
            (
                "eth0\t00000000\t0102A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n\
                 eth0\t0002A8C0\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0\n",
                Some("eth0"),
            ),
            (
                "wlan0\t00000000\t0101A8C0\t0003\t0\t0\t600\t00000000\t0\t0\t0\n\
                 enp3s0\t00000000\t0101000A\t0003\t0\t0\t100\t00000000\t0\t0\t0\n",
                Some("enp3s0"),
            ),
            // Only a local network, no default route.
            (
                "eth0\t0002A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n",
                None,
            ),
            // A default route that is down.
            (
                "eth0\t00000000\t0102A8C0\t0002\t0\t0\t0\t00000000\t0\t0\t0\n",
                None,
            ),
            ("", None),
        ];
        for (rows, expected) in cases {
            assert_eq!(
                default_route_interface(&format!("{HEADER}{rows}")).as_deref(),
                expected,
                "{rows}"
            );
        }
    }

    #[test]
    fn the_flag_wins_then_a_specific_bind_address() {
        let flag: IpAddr = "192.0.2.7".parse().expect("ip");
        let bind: IpAddr = "198.51.100.1".parse().expect("ip");
        let any: IpAddr = "0.0.0.0".parse().expect("ip");
        assert_eq!(advertise(Some(flag), bind), flag);
        assert_eq!(advertise(Some(flag), any), flag);
        assert_eq!(advertise(None, bind), bind);
        assert!(!advertise(None, any).is_unspecified());
    }
}
