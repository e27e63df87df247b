//! Turning what a user types after `--bind` / `--connect` into a ZeroMQ endpoint.
//!
//! Parsing is pure (no DNS, no sockets) so every accepted form and every
//! rejection can be unit-tested; [`Address::resolve`] is the one step that may
//! touch the resolver, and only for host names.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, ToSocketAddrs};

/// Port used when an address names no port, as the original pyzmq programs did.
pub const DEFAULT_PORT: u16 = 8877;

/// Address used by both binaries when no flag is given.
pub const DEFAULT_ADDRESS: &str = "127.0.0.1:8877";

/// The forms accepted, quoted in every error so the user sees what would work.
pub const ACCEPTED_FORMS: &str = "IP:PORT, HOST:PORT, [IPv6]:PORT, IP or HOST alone (port 8877), \
     *:PORT (all interfaces, --bind only), tcp://… or ipc://…";

/// Whether the address is for a socket that listens or one that dials out.
///
/// Wildcards (`*` host, port `0` or `*`) only make sense for a listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// `chat-server --bind`: wildcards allowed.
    Bind,
    /// `chat-client --connect`: a concrete host and port are needed.
    Connect,
}

/// The host part of a TCP address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Host {
    /// A literal IPv4 or IPv6 address.
    Ip(IpAddr),
    /// A DNS name, resolved by [`Address::resolve`].
    Name(String),
    /// `*`: every interface of this machine (bind only).
    AllInterfaces,
}

/// The port part of a TCP address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Port {
    /// A fixed port number (never 0).
    Number(u16),
    /// `0` or `*`: let the operating system choose a free port (bind only).
    Any,
}

/// A parsed, not yet resolved, address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Address {
    /// A TCP host and port.
    Tcp {
        /// An IP, a name, or all interfaces.
        host: Host,
        /// A number, or any free port.
        port: Port,
    },
    /// A Unix domain socket path (`ipc://path`), for two programs on one machine.
    Ipc(String),
}

/// A concrete ZeroMQ endpoint, ready for `bind` or `connect`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// `tcp://IP:PORT`; `host` is an IP literal or `*`.
    Tcp {
        /// An IP literal, or all interfaces.
        host: EndpointHost,
        /// A number, or any free port.
        port: Port,
    },
    /// `ipc://PATH`.
    Ipc(String),
}

/// The host of a resolved TCP endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndpointHost {
    /// A literal address.
    Ip(IpAddr),
    /// Every interface, IPv4 and IPv6.
    AllInterfaces,
}

/// Why an address was rejected. Each variant names the offending part.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// Nothing was given.
    #[error("the address is empty")]
    Empty,
    /// A `scheme://` other than `tcp` or `ipc`.
    #[error("unknown scheme '{0}://' (use tcp:// or ipc://)")]
    UnknownScheme(String),
    /// `ipc://` with no path.
    #[error("ipc:// needs a socket path, as in ipc:///tmp/chat.sock")]
    EmptyIpcPath,
    /// Nothing before the `:`.
    #[error("nothing before ':' (give a host, as in 127.0.0.1:8877)")]
    MissingHost,
    /// Nothing after the `:`.
    #[error("nothing after ':' (give a port, as in 127.0.0.1:8877)")]
    MissingPort,
    /// The port is not a number.
    #[error("port '{0}' is not a number")]
    InvalidPort(String),
    /// The port is a number above 65535.
    #[error("port {0} is out of range (1-65535)")]
    PortOutOfRange(String),
    /// Port 0 or `*` given to `--connect`.
    #[error("port 0 or '*' means 'any free port' and only works with --bind")]
    WildcardPortForConnect,
    /// Host `*` given to `--connect`.
    #[error("host '*' means 'all interfaces' and only works with --bind")]
    WildcardHostForConnect,
    /// Text inside `[...]` that is not an IPv6 address.
    #[error("'[{0}]' is not an IPv6 address")]
    InvalidIpv6(String),
    /// An IPv6 address with a port but without brackets.
    #[error("'{0}' looks like IPv6 with a port; put the address in brackets, as in [::1]:8877")]
    UnbracketedIpv6(String),
    /// An IPv6 address whose last group reads as a port: `::1:8877` (the
    /// address and the port meant are given).
    #[error(
        "'{text}' is ambiguous: an IPv6 address with a port needs brackets, as in [{address}]:{port} (or [{text}] for that whole address with the default port)"
    )]
    AmbiguousIpv6 {
        /// The text as typed.
        text: String,
        /// The address before the last `:`.
        address: String,
        /// The last group, which reads as a port.
        port: String,
    },
    /// Digits and dots that are not the four parts of an IPv4 address
    /// (`1.2.3`, which the C library would read as 1.2.0.3).
    #[error("'{0}' is not an IPv4 address: a dotted address has four parts, as in 127.0.0.1")]
    InvalidIpv4(String),
    /// Characters that cannot appear in a host name.
    #[error("'{0}' is not a valid host name or IP address")]
    InvalidHost(String),
    /// Something after `]` other than `:PORT`.
    #[error("unexpected '{0}' after the IPv6 address (expected ':PORT')")]
    TrailingText(String),
    /// The host name does not resolve.
    #[error("cannot resolve host '{0}' (check the name or use an IP address)")]
    UnknownHost(String),
}

impl Address {
    /// Parses user text into an address for the given role.
    pub fn parse(text: &str, role: Role) -> Result<Address, AddressError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(AddressError::Empty);
        }
        let address = match text.split_once("://") {
            Some((scheme, rest)) => match scheme.to_ascii_lowercase().as_str() {
                "tcp" => parse_host_port(rest)?,
                "ipc" if rest.is_empty() => return Err(AddressError::EmptyIpcPath),
                "ipc" => Address::Ipc(rest.to_string()),
                _ => return Err(AddressError::UnknownScheme(scheme.to_string())),
            },
            None => parse_host_port(text)?,
        };
        if role == Role::Connect
            && let Address::Tcp { host, port } = &address
        {
            if *host == Host::AllInterfaces {
                return Err(AddressError::WildcardHostForConnect);
            }
            if *port == Port::Any {
                return Err(AddressError::WildcardPortForConnect);
            }
        }
        Ok(address)
    }

    /// Turns the address into an endpoint, looking host names up in DNS.
    ///
    /// When a name has both IPv4 and IPv6 addresses, IPv4 wins: `localhost`
    /// then means 127.0.0.1 for both binaries, as plain pyzmq peers expect.
    pub fn resolve(&self) -> Result<Endpoint, AddressError> {
        match self {
            Address::Ipc(path) => Ok(Endpoint::Ipc(path.clone())),
            Address::Tcp { host, port } => {
                let host = match host {
                    Host::Ip(ip) => EndpointHost::Ip(*ip),
                    Host::AllInterfaces => EndpointHost::AllInterfaces,
                    Host::Name(name) => EndpointHost::Ip(resolve_name(name)?),
                };
                Ok(Endpoint::Tcp { host, port: *port })
            }
        }
    }
}

fn resolve_name(name: &str) -> Result<IpAddr, AddressError> {
    let unknown = || AddressError::UnknownHost(name.to_string());
    let candidates: Vec<IpAddr> = (name, 0)
        .to_socket_addrs()
        .map_err(|_| unknown())?
        .map(|socket| socket.ip())
        .collect();
    candidates
        .iter()
        .find(|ip| ip.is_ipv4())
        .or_else(|| candidates.first())
        .copied()
        .ok_or_else(unknown)
}

fn parse_host_port(text: &str) -> Result<Address, AddressError> {
    if let Some(rest) = text.strip_prefix('[') {
        let (inside, after) = rest
            .split_once(']')
            .ok_or_else(|| AddressError::InvalidIpv6(rest.to_string()))?;
        let ip: Ipv6Addr = inside
            .parse()
            .map_err(|_| AddressError::InvalidIpv6(inside.to_string()))?;
        let port = match after {
            "" => Port::Number(DEFAULT_PORT),
            _ => match after.strip_prefix(':') {
                Some(port) => parse_port(port)?,
                None => return Err(AddressError::TrailingText(after.to_string())),
            },
        };
        return Ok(Address::Tcp {
            host: Host::Ip(IpAddr::V6(ip)),
            port,
        });
    }
    if let Ok(ip) = text.parse::<Ipv6Addr>() {
        // `::1:8877` is a valid address, and also `::1` with a port typed
        // without brackets: refused, naming both forms.
        if let Some((address, port)) = text.rsplit_once(':')
            && !port.is_empty()
            && port.chars().all(|c| c.is_ascii_digit())
            && address.parse::<Ipv6Addr>().is_ok()
        {
            return Err(AddressError::AmbiguousIpv6 {
                text: text.to_string(),
                address: address.to_string(),
                port: port.to_string(),
            });
        }
        let host = Host::Ip(IpAddr::V6(ip));
        return Ok(Address::Tcp {
            host,
            port: Port::Number(DEFAULT_PORT),
        });
    }
    let (host, port) = match text.split_once(':') {
        Some((_, after)) if after.contains(':') => {
            return Err(AddressError::UnbracketedIpv6(text.to_string()));
        }
        Some((host, port)) => (host, parse_port(port)?),
        None => (text, Port::Number(DEFAULT_PORT)),
    };
    Ok(Address::Tcp {
        host: parse_host(host)?,
        port,
    })
}

fn parse_host(host: &str) -> Result<Host, AddressError> {
    if host.is_empty() {
        return Err(AddressError::MissingHost);
    }
    if host == "*" {
        return Ok(Host::AllInterfaces);
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(Host::Ip(ip));
    }
    // Digits and dots only: meant as IPv4 (no host name is all digits, RFC
    // 1123), and the C library's shorthands (`1.2.3`, `127.1`) are refused.
    if host.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return Err(AddressError::InvalidIpv4(host.to_string()));
    }
    if is_valid_host_name(host) {
        Ok(Host::Name(host.to_string()))
    } else {
        Err(AddressError::InvalidHost(host.to_string()))
    }
}

/// RFC 1123 host names: dot-separated labels of letters, digits and inner
/// hyphens, at most 253 characters. Underscores are tolerated because some
/// internal DNS zones use them.
fn is_valid_host_name(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
}

fn parse_port(port: &str) -> Result<Port, AddressError> {
    match port {
        "" => Err(AddressError::MissingPort),
        "*" | "0" => Ok(Port::Any),
        digits if digits.chars().all(|c| c.is_ascii_digit()) => match digits.parse::<u16>() {
            Ok(0) => Ok(Port::Any),
            Ok(number) => Ok(Port::Number(number)),
            Err(_) => Err(AddressError::PortOutOfRange(digits.to_string())),
        },
        other => Err(AddressError::InvalidPort(other.to_string())),
    }
}

impl Endpoint {
    /// Whether the socket needs `ZMQ_IPV6` to use this endpoint.
    ///
    /// The all-interfaces wildcard asks for it too, so that `*` listens on
    /// IPv6 as well as IPv4 (libzmq falls back to IPv4 where IPv6 is off).
    pub fn needs_ipv6(&self) -> bool {
        matches!(
            self,
            Endpoint::Tcp {
                host: EndpointHost::Ip(IpAddr::V6(_)) | EndpointHost::AllInterfaces,
                ..
            }
        )
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Ipc(path) => write!(f, "ipc://{path}"),
            Endpoint::Tcp { host, port } => {
                match host {
                    EndpointHost::Ip(IpAddr::V4(ip)) => write!(f, "tcp://{ip}")?,
                    EndpointHost::Ip(IpAddr::V6(ip)) => write!(f, "tcp://[{ip}]")?,
                    EndpointHost::AllInterfaces => write!(f, "tcp://*")?,
                }
                match port {
                    Port::Number(number) => write!(f, ":{number}"),
                    Port::Any => write!(f, ":*"),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::Ipv4Addr;

    fn bind(text: &str) -> Result<String, AddressError> {
        Ok(Address::parse(text, Role::Bind)?.resolve()?.to_string())
    }

    fn connect(text: &str) -> Result<String, AddressError> {
        Ok(Address::parse(text, Role::Connect)?.resolve()?.to_string())
    }

    #[test]
    fn accepts_every_documented_form() {
        let cases = [
            ("127.0.0.1:8877", "tcp://127.0.0.1:8877"),
            ("10.1.2.3", "tcp://10.1.2.3:8877"),
            ("localhost:9000", "tcp://127.0.0.1:9000"),
            ("localhost", "tcp://127.0.0.1:8877"),
            ("[::1]:9000", "tcp://[::1]:9000"),
            ("[::1]", "tcp://[::1]:8877"),
            ("::1", "tcp://[::1]:8877"),
            ("fe80::1", "tcp://[fe80::1]:8877"),
            ("tcp://127.0.0.1:5555", "tcp://127.0.0.1:5555"),
            ("TCP://[::1]:5555", "tcp://[::1]:5555"),
            ("ipc:///tmp/chat.sock", "ipc:///tmp/chat.sock"),
            ("  127.0.0.1:1  ", "tcp://127.0.0.1:1"),
            ("127.0.0.1:65535", "tcp://127.0.0.1:65535"),
        ];
        for (text, endpoint) in cases {
            assert_eq!(bind(text).as_deref(), Ok(endpoint), "bind {text}");
            assert_eq!(connect(text).as_deref(), Ok(endpoint), "connect {text}");
        }
    }

    #[test]
    fn bind_accepts_wildcards() {
        assert_eq!(bind("*:8877").unwrap(), "tcp://*:8877");
        assert_eq!(bind("*").unwrap(), "tcp://*:8877");
        assert_eq!(bind("0.0.0.0:8877").unwrap(), "tcp://0.0.0.0:8877");
        assert_eq!(bind("127.0.0.1:0").unwrap(), "tcp://127.0.0.1:*");
        assert_eq!(bind("127.0.0.1:*").unwrap(), "tcp://127.0.0.1:*");
        assert_eq!(bind("[::1]:0").unwrap(), "tcp://[::1]:*");
        assert_eq!(bind("tcp://*:*").unwrap(), "tcp://*:*");
    }

    #[test]
    fn connect_rejects_wildcards() {
        assert_eq!(connect("*:8877"), Err(AddressError::WildcardHostForConnect));
        assert_eq!(
            connect("127.0.0.1:0"),
            Err(AddressError::WildcardPortForConnect)
        );
        assert_eq!(
            connect("127.0.0.1:*"),
            Err(AddressError::WildcardPortForConnect)
        );
    }

    #[test]
    fn rejects_malformed_text_naming_the_bad_part() {
        use AddressError::*;
        let cases = [
            ("", Empty),
            ("   ", Empty),
            ("udp://1.2.3.4:5", UnknownScheme("udp".into())),
            ("http://example.com", UnknownScheme("http".into())),
            ("ipc://", EmptyIpcPath),
            (":8877", MissingHost),
            ("127.0.0.1:", MissingPort),
            ("127.0.0.1:http", InvalidPort("http".into())),
            ("127.0.0.1:-1", InvalidPort("-1".into())),
            ("127.0.0.1:65536", PortOutOfRange("65536".into())),
            (
                "127.0.0.1:99999999999",
                PortOutOfRange("99999999999".into()),
            ),
            ("[::1", InvalidIpv6("::1".into())),
            ("[nope]:80", InvalidIpv6("nope".into())),
            ("[::1]80", TrailingText("80".into())),
            ("::1:80:", UnbracketedIpv6("::1:80:".into())),
            ("1.2.3.4:5:6", UnbracketedIpv6("1.2.3.4:5:6".into())),
            ("bad host:80", InvalidHost("bad host".into())),
            ("-lead.example:80", InvalidHost("-lead.example".into())),
            ("a..b", InvalidHost("a..b".into())),
            ("1.2.3:8877", InvalidIpv4("1.2.3".into())),
            ("127.1", InvalidIpv4("127.1".into())),
            ("1.2.3.4.5:80", InvalidIpv4("1.2.3.4.5".into())),
            ("300.1.1.1", InvalidIpv4("300.1.1.1".into())),
            (
                "::1:8877",
                AmbiguousIpv6 {
                    text: "::1:8877".into(),
                    address: "::1".into(),
                    port: "8877".into(),
                },
            ),
            ("tcp://", MissingHost),
        ];
        for (text, expected) in cases {
            assert_eq!(
                Address::parse(text, Role::Bind),
                Err(expected),
                "input {text:?}"
            );
        }
    }

    /// Issue 26, point 8: the two typos name the form meant.
    #[test]
    fn typos_that_the_c_library_would_accept_name_the_form_meant() {
        let ipv4 = Address::parse("1.2.3:8877", Role::Connect).unwrap_err();
        assert_eq!(
            ipv4.to_string(),
            "'1.2.3' is not an IPv4 address: a dotted address has four parts, as in 127.0.0.1"
        );
        let ipv6 = Address::parse("::1:8877", Role::Connect).unwrap_err();
        assert!(ipv6.to_string().contains("[::1]:8877"), "{ipv6}");
        // What is not ambiguous still works.
        for text in [
            "[::1:8877]",
            "[::1]:8877",
            "2001:db8::abcd",
            "::1",
            "::ffff:1.2.3.4",
        ] {
            assert!(Address::parse(text, Role::Connect).is_ok(), "{text}");
        }
    }

    #[test]
    fn unresolvable_host_is_reported_by_name() {
        let address = Address::parse("no-such-host.invalid:8877", Role::Connect).unwrap();
        assert_eq!(
            address.resolve(),
            Err(AddressError::UnknownHost("no-such-host.invalid".into()))
        );
    }

    #[test]
    fn errors_read_as_one_line_naming_the_part() {
        let message = AddressError::PortOutOfRange("70000".into()).to_string();
        assert!(message.contains("70000") && !message.contains('\n'));
        let message = AddressError::UnknownScheme("udp".into()).to_string();
        assert!(message.contains("udp://") && message.contains("tcp://"));
    }

    #[test]
    fn ipv6_endpoints_ask_for_ipv6_sockets() {
        let v6 = Address::parse("[::1]:1", Role::Connect)
            .unwrap()
            .resolve()
            .unwrap();
        let v4 = Address::parse("127.0.0.1:1", Role::Connect)
            .unwrap()
            .resolve()
            .unwrap();
        let all = Address::parse("*:1", Role::Bind)
            .unwrap()
            .resolve()
            .unwrap();
        assert!(v6.needs_ipv6() && all.needs_ipv6() && !v4.needs_ipv6());
    }

    proptest! {
        #[test]
        fn parser_never_panics(text in "\\PC*", bind_role in any::<bool>()) {
            let role = if bind_role { Role::Bind } else { Role::Connect };
            let _ = Address::parse(&text, role);
        }

        #[test]
        fn parser_never_panics_on_address_like_text(text in "[0-9a-f:\\[\\]*.]{0,40}") {
            let _ = Address::parse(&text, Role::Bind);
        }

        #[test]
        fn ip_endpoints_round_trip(a in any::<[u8; 4]>(), b in any::<[u16; 8]>(), port in 1u16..) {
            let ips = [IpAddr::V4(Ipv4Addr::from(a)), IpAddr::V6(Ipv6Addr::from(b))];
            for ip in ips {
                let text = match ip {
                    IpAddr::V4(v4) => format!("{v4}:{port}"),
                    IpAddr::V6(v6) => format!("[{v6}]:{port}"),
                };
                let endpoint = Address::parse(&text, Role::Connect).unwrap().resolve().unwrap();
                prop_assert_eq!(&endpoint, &Endpoint::Tcp { host: EndpointHost::Ip(ip), port: Port::Number(port) });
                let again = Address::parse(&endpoint.to_string(), Role::Connect).unwrap().resolve().unwrap();
                prop_assert_eq!(again, endpoint);
            }
        }
    }
}
