//! Where the server may connect on a tenant's behalf (`http(s)://` import URLs), and for how long.
//!
//! The decision is made on the address a name resolves to, never on the name alone, and the
//! fetch then connects to exactly that address (curl through `--resolve`), so a name that
//! resolves differently the second time cannot reach what was refused the first. Every
//! redirect is a new decision. Addresses that are not globally routable (loopback, private,
//! shared, link-local, unique-local, unspecified, multicast, documentation, reserved, and IPv6
//! forms that embed such an IPv4 address) are refused unless the operator allow-lists their
//! network or the host name.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use ipnet::IpNet;

/// Default time to establish a connection.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time a fetch may wait for the first byte of an answer, or between two reads.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Default cap on one fetch from the first connection to the last byte, redirects included.
pub const DEFAULT_MAX_TRANSFER_TIME: Duration = Duration::from_secs(6 * 3600);

/// The operator's egress rules for import fetches.
#[derive(Debug, Clone)]
pub struct EgressPolicy {
    networks: Vec<IpNet>,
    hosts: Vec<String>,
    /// Time to establish a connection.
    pub connect_timeout: Duration,
    /// Longest wait for the first byte of an answer, or between two reads.
    pub idle_timeout: Duration,
    /// Cap on a whole fetch, redirects included.
    pub max_transfer_time: Duration,
}

impl Default for EgressPolicy {
    fn default() -> Self {
        Self {
            networks: Vec::new(),
            hosts: Vec::new(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_transfer_time: DEFAULT_MAX_TRANSFER_TIME,
        }
    }
}

impl EgressPolicy {
    /// The default policy (public addresses only) widened by `allow`: networks (`10.0.0.0/8`),
    /// single addresses (`192.168.1.5`, `::1`) and host names (`files.lab`, matched exactly,
    /// case-insensitively).
    pub fn with_allowed(allow: &[String]) -> Result<Self, String> {
        let mut policy = Self::default();
        for entry in allow {
            let entry = entry.trim();
            if let Ok(net) = entry.parse::<IpNet>() {
                policy.networks.push(net.trunc());
            } else if let Ok(addr) = entry.parse::<IpAddr>() {
                policy.networks.push(IpNet::from(addr));
            } else if !entry.is_empty()
                && entry.split('.').all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
            {
                policy.hosts.push(entry.to_ascii_lowercase());
            } else {
                return Err(format!("`{entry}` is neither a network, an address nor a host name"));
            }
        }
        Ok(policy)
    }

    /// Whether a fetch of `host` may connect to `addr`.
    pub fn permits(&self, host: &str, addr: IpAddr) -> bool {
        is_global(addr)
            || self.networks.iter().any(|n| n.contains(&addr))
            || self.hosts.iter().any(|h| h.eq_ignore_ascii_case(host.trim_end_matches('.')))
    }

    /// The first of `candidates` a fetch of `host` may connect to.
    pub fn choose(&self, host: &str, candidates: impl IntoIterator<Item = SocketAddr>) -> Option<SocketAddr> {
        candidates.into_iter().find(|a| self.permits(host, a.ip()))
    }
}

/// Whether `addr` is a globally routable unicast address.
pub fn is_global(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(v4) => is_global_v4(v4),
        IpAddr::V6(v6) => is_global_v6(v6),
    }
}

fn is_global_v4(a: Ipv4Addr) -> bool {
    let [b0, b1, b2, _] = a.octets();
    !(b0 == 0                                   // "this network", unspecified
        || b0 == 10                             // private
        || b0 == 127                            // loopback
        || (b0 == 100 && (b1 & 0xc0) == 64)     // shared address space (CGNAT)
        || (b0 == 169 && b1 == 254)             // link-local
        || (b0 == 172 && (b1 & 0xf0) == 16)     // private
        || (b0 == 192 && b1 == 0 && b2 == 0)    // IETF protocol assignments
        || (b0 == 192 && b1 == 0 && b2 == 2)    // documentation
        || (b0 == 192 && b1 == 88 && b2 == 99)  // 6to4 relay anycast
        || (b0 == 192 && b1 == 168)             // private
        || (b0 == 198 && (b1 & 0xfe) == 18)     // benchmarking
        || (b0 == 198 && b1 == 51 && b2 == 100) // documentation
        || (b0 == 203 && b1 == 0 && b2 == 113)  // documentation
        || b0 >= 224) // multicast, reserved, broadcast
}

fn is_global_v6(a: Ipv6Addr) -> bool {
    let s = a.segments();
    if let Some(v4) = a.to_ipv4_mapped() {
        return is_global_v4(v4);
    }
    if s[0] == 0x0064 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
        // NAT64: the embedded IPv4 address decides.
        return is_global_v4(Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8));
    }
    if s[0] == 0x2002 {
        // 6to4: the embedded IPv4 address decides.
        return is_global_v4(Ipv4Addr::new((s[1] >> 8) as u8, s[1] as u8, (s[2] >> 8) as u8, s[2] as u8));
    }
    !(s[0..6] == [0, 0, 0, 0, 0, 0]             // unspecified, loopback, IPv4-compatible
        || (s[0] & 0xfe00) == 0xfc00            // unique local
        || (s[0] & 0xffc0) == 0xfe80            // link-local
        || (s[0] & 0xffc0) == 0xfec0            // site-local (deprecated)
        || (s[0] & 0xff00) == 0xff00            // multicast
        || (s[0] == 0x0100 && s[1..4] == [0, 0, 0]) // discard-only
        || (s[0] == 0x2001 && s[1] == 0x0db8)   // documentation
        || (s[0] == 0x2001 && s[1] < 0x0200)    // IETF protocol assignments, Teredo
        || (s[0] & 0xe000) != 0x2000) // outside global unicast 2000::/3
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("address")
    }

    #[test]
    fn internal_addresses_of_every_kind_are_not_global() {
        for a in [
            "127.0.0.1",
            "127.1.2.3",
            "0.0.0.0",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.0.1",
            "169.254.169.254",
            "100.64.0.1",
            "224.0.0.1",
            "239.255.255.250",
            "255.255.255.255",
            "240.0.0.1",
            "192.0.2.1",
            "198.18.0.1",
            "::",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "ff02::1",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::",
            "2001:db8::1",
            "2001::1",
            "fec0::1",
        ] {
            assert!(!is_global(ip(a)), "{a} must not be reachable by default");
        }
    }

    #[test]
    fn public_addresses_are_global() {
        for a in
            ["8.8.8.8", "1.1.1.1", "172.32.0.1", "100.128.0.1", "2606:4700::1111", "::ffff:8.8.8.8", "2002:808:808::"]
        {
            assert!(is_global(ip(a)), "{a} is public");
        }
    }

    #[test]
    fn the_allow_list_opens_networks_addresses_and_host_names_only() {
        let p =
            EgressPolicy::with_allowed(&["127.0.0.0/8".into(), "fd00::5".into(), "Files.Lab".into()]).expect("policy");
        assert!(p.permits("x", ip("127.0.0.1")));
        assert!(p.permits("x", ip("fd00::5")));
        assert!(!p.permits("x", ip("fd00::6")));
        assert!(!p.permits("x", ip("10.0.0.1")));
        assert!(p.permits("files.lab", ip("10.0.0.1")), "an allowed host name may resolve anywhere");
        assert!(p.permits("FILES.LAB.", ip("10.0.0.1")));
        assert!(!p.permits("other.lab", ip("10.0.0.1")));
        assert!(EgressPolicy::with_allowed(&["not a host!".into()]).is_err());
        let choice = p.choose("x", [SocketAddr::new(ip("10.0.0.1"), 80), SocketAddr::new(ip("127.0.0.2"), 80)]);
        assert_eq!(choice, Some(SocketAddr::new(ip("127.0.0.2"), 80)), "the first permitted candidate");
        assert_eq!(EgressPolicy::default().choose("x", [SocketAddr::new(ip("10.0.0.1"), 80)]), None);
    }
}
