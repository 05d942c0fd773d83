//! Where webhooks may go (SSRF): an `https` URL whose host resolves to public
//! addresses only. Checked when an endpoint's URL is set, and again at every
//! delivery by the HTTP client's resolver, so that a name re-pointed at a
//! private address afterwards (DNS rebinding) is refused too.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::domain::quoted;
use crate::error::{Error, Result};

/// The longest URL accepted.
pub const MAX_URL_LEN: usize = 2048;
/// How long a host name may take to resolve.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Which destinations are allowed: public https only, or (for tests and
/// closed networks, `--webhook-allow-private`) any.
#[derive(Debug, Clone, Copy)]
pub struct Destinations {
    pub allow_private: bool,
}

impl Destinations {
    /// Parses and checks `raw`, resolving its host; `field` names it in errors.
    pub async fn check(&self, field: &str, raw: &str) -> Result<Url> {
        let url = self.check_shape(field, raw)?;
        let host = url
            .host_str()
            .unwrap_or_default()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = url.port_or_known_default().unwrap_or(443);
        let addrs = resolve(&host, port).await.map_err(|why| {
            Error::invalid(
                field,
                format!(
                    "host {} does not resolve ({why}); use a host name with public DNS records",
                    quoted(&host)
                ),
            )
        })?;
        if !self.allow_private {
            for addr in &addrs {
                if let Some(rule) = forbidden(addr.ip()) {
                    return Err(refused(field, &host, addr.ip(), rule));
                }
            }
        }
        Ok(url)
    }

    /// The rules that need no DNS: scheme, credentials, length, and an
    /// address written in the URL itself (which the resolver never sees).
    pub fn check_shape(&self, field: &str, raw: &str) -> Result<Url> {
        if raw.len() > MAX_URL_LEN {
            return Err(Error::invalid(
                field,
                format!("the URL is longer than {MAX_URL_LEN} characters"),
            ));
        }
        let url = Url::parse(raw).map_err(|err| {
            Error::invalid(
                field,
                format!(
                    "{} is not a URL ({err}); expected e.g. https://hooks.example.com/orgd",
                    quoted(raw)
                ),
            )
        })?;
        match url.scheme() {
            "https" => {}
            "http" if self.allow_private => {}
            other => {
                return Err(Error::invalid(
                    field,
                    format!("the URL must use https, not {}:", quoted(other)),
                ));
            }
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(Error::invalid(
                field,
                "the URL must not carry a user name or password: orgd signs every delivery (webhook-signature) instead",
            ));
        }
        if url.fragment().is_some() {
            return Err(Error::invalid(
                field,
                "the URL must not have a #fragment: it is never sent",
            ));
        }
        let Some(host) = url.host_str().filter(|host| !host.is_empty()) else {
            return Err(Error::invalid(field, "the URL has no host"));
        };
        // An address in the URL (IPv6 in brackets) is never resolved.
        let literal: Option<IpAddr> = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .ok();
        if let Some(ip) = literal.filter(|_| !self.allow_private)
            && let Some(rule) = forbidden(ip)
        {
            return Err(refused(field, &ip.to_string(), ip, rule));
        }
        Ok(url)
    }
}

fn refused(field: &str, host: &str, ip: IpAddr, rule: &str) -> Error {
    Error::invalid(
        field,
        format!(
            "host {} is {ip}, {rule}: orgd delivers webhooks to public addresses only (--webhook-allow-private lifts this)",
            quoted(host)
        ),
    )
}

async fn resolve(host: &str, port: u16) -> std::result::Result<Vec<SocketAddr>, String> {
    let lookup = tokio::net::lookup_host((host, port));
    match tokio::time::timeout(RESOLVE_TIMEOUT, lookup).await {
        Ok(Ok(addrs)) => {
            let addrs: Vec<SocketAddr> = addrs.collect();
            if addrs.is_empty() {
                Err("no address".into())
            } else {
                Ok(addrs)
            }
        }
        Ok(Err(err)) => Err(err.to_string()),
        Err(_) => Err(format!("no answer within {RESOLVE_TIMEOUT:?}")),
    }
}

/// The rule that forbids delivering to `ip`, if one does.
pub fn forbidden(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(ip) => forbidden_v4(ip),
        IpAddr::V6(ip) => forbidden_v6(ip),
    }
}

fn in_v4(ip: Ipv4Addr, net: [u8; 4], bits: u32) -> bool {
    let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
    u32::from(ip) & mask == u32::from(Ipv4Addr::from(net)) & mask
}

fn forbidden_v4(ip: Ipv4Addr) -> Option<&'static str> {
    const RULES: &[([u8; 4], u32, &str)] = &[
        ([0, 0, 0, 0], 8, "an unspecified address (0.0.0.0/8)"),
        ([10, 0, 0, 0], 8, "a private address (10.0.0.0/8)"),
        ([100, 64, 0, 0], 10, "a shared address (100.64.0.0/10)"),
        ([127, 0, 0, 0], 8, "a loopback address (127.0.0.0/8)"),
        (
            [169, 254, 0, 0],
            16,
            "a link-local address (169.254.0.0/16)",
        ),
        ([172, 16, 0, 0], 12, "a private address (172.16.0.0/12)"),
        (
            [192, 0, 0, 0],
            24,
            "a protocol-assignment address (192.0.0.0/24)",
        ),
        ([192, 0, 2, 0], 24, "a documentation address (192.0.2.0/24)"),
        ([192, 168, 0, 0], 16, "a private address (192.168.0.0/16)"),
        (
            [198, 18, 0, 0],
            15,
            "a benchmarking address (198.18.0.0/15)",
        ),
        (
            [198, 51, 100, 0],
            24,
            "a documentation address (198.51.100.0/24)",
        ),
        (
            [203, 0, 113, 0],
            24,
            "a documentation address (203.0.113.0/24)",
        ),
        ([224, 0, 0, 0], 4, "a multicast address (224.0.0.0/4)"),
        (
            [240, 0, 0, 0],
            4,
            "a reserved or broadcast address (240.0.0.0/4)",
        ),
    ];
    RULES
        .iter()
        .find(|(net, bits, _)| in_v4(ip, *net, *bits))
        .map(|(_, _, rule)| *rule)
}

fn forbidden_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let segments = ip.segments();
    let embedded_v4 = |high: usize| {
        Ipv4Addr::new(
            (segments[high] >> 8) as u8,
            segments[high] as u8,
            (segments[high + 1] >> 8) as u8,
            segments[high + 1] as u8,
        )
    };
    if ip.is_unspecified() {
        return Some("an unspecified address (::)");
    }
    if ip.is_loopback() {
        return Some("a loopback address (::1)");
    }
    // Addresses that carry an IPv4 address reach it: judge that one.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return forbidden_v4(v4);
    }
    if segments[..6] == [0; 6] {
        return Some("an IPv4-compatible address (::/96, deprecated)");
    }
    if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return forbidden_v4(embedded_v4(6));
    }
    if segments[0] == 0x2002 {
        return forbidden_v4(embedded_v4(1));
    }
    const RULES: &[(u16, u16, &str)] = &[
        (0xfe00, 0xfc00, "a unique local address (fc00::/7)"),
        (0xffc0, 0xfe80, "a link-local address (fe80::/10)"),
        (0xffc0, 0xfec0, "a site-local address (fec0::/10)"),
        (0xff00, 0xff00, "a multicast address (ff00::/8)"),
    ];
    if let Some((_, _, rule)) = RULES
        .iter()
        .find(|(mask, net, _)| segments[0] & mask == *net)
    {
        return Some(rule);
    }
    if segments[..2] == [0x2001, 0x0db8] || segments[0] & 0xfff0 == 0x3ff0 {
        return Some("a documentation address (2001:db8::/32, 3fff::/20)");
    }
    if segments[..4] == [0x0100, 0, 0, 0] {
        return Some("a discard-only address (100::/64)");
    }
    None
}

/// The HTTP client's resolver: the system's, refusing a name any of whose
/// addresses is forbidden.
pub struct PublicOnly;

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs = resolve(&host, 0).await?;
            if let Some((ip, rule)) = addrs
                .iter()
                .find_map(|addr| forbidden(addr.ip()).map(|rule| (addr.ip(), rule)))
            {
                return Err(format!(
                    "{host} now resolves to {ip}, {rule}; orgd delivers webhooks to public addresses only"
                )
                .into());
            }
            let addrs: Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_and_special_addresses_are_forbidden() {
        for ip in [
            "0.0.0.0",
            "10.1.2.3",
            "100.64.0.1",
            "127.0.0.1",
            "169.254.169.254",
            "172.31.255.255",
            "192.168.1.1",
            "192.0.2.10",
            "198.51.100.1",
            "203.0.113.9",
            "224.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "64:ff9b::a00:1",
            "2002:c0a8:0101::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "ff02::1",
            "2001:db8::1",
            "3fff::1",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert!(forbidden(ip).is_some(), "{ip} allowed");
        }
        for ip in [
            "93.184.215.14",
            "1.1.1.1",
            "172.32.0.1",
            "::ffff:93.184.215.14",
            "2606:4700:4700::1111",
            "64:ff9b::808:808",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(forbidden(ip), None, "{ip}");
        }
    }

    #[test]
    fn urls_are_https_without_credentials() {
        let public = Destinations {
            allow_private: false,
        };
        for bad in [
            "http://hooks.example.com/",
            "ftp://hooks.example.com/",
            "https://user:pw@hooks.example.com/",
            "https://hooks.example.com/#x",
            "https://127.0.0.1/",
            "https://[::1]/",
            "https://[::ffff:169.254.169.254]/",
            "not a url",
        ] {
            assert!(public.check_shape("url", bad).is_err(), "{bad} accepted");
        }
        assert!(public.check_shape("url", "https://93.184.215.14/h").is_ok());
        let private = Destinations {
            allow_private: true,
        };
        assert!(private.check_shape("url", "http://127.0.0.1:8080/").is_ok());
    }
}
