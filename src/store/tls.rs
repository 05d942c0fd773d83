//! TLS to PostgreSQL with libpq's `sslmode`, `sslrootcert`, `sslcert` and
//! `sslkey`, over rustls with the ring provider.
//!
//! tokio-postgres knows only `sslmode=disable|prefer|require` and rejects the
//! other keys, so these are taken out of DATABASE_URL here and the rest is
//! handed to tokio-postgres. What each mode checks (as libpq does):
//! - `disable`: no TLS.
//! - `prefer` (the default): TLS when the server offers it, else plaintext.
//! - `require`: TLS or no connection.
//! - `verify-ca`: TLS, and the server's chain must lead to `sslrootcert`.
//! - `verify-full`: `verify-ca`, and the certificate must name the host.
//!
//! `prefer` and `require` check nothing about the certificate unless
//! `sslrootcert` is given; then they check the chain, like `verify-ca`.
//! Unlike libpq, there is no implicit `~/.postgresql/root.crt`: `verify-*` need
//! `sslrootcert`, a PEM file or `system` (the Mozilla roots built into orgd, for
//! servers with publicly trusted certificates; it implies `verify-full`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use percent_encoding::percent_decode_str;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres::config::SslMode as PgSslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

/// libpq's `sslmode` values that orgd supports (all but `allow`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

/// Where the CA certificates that vouch for the server come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootCerts {
    File(PathBuf),
    /// `sslrootcert=system`.
    System,
}

/// The TLS settings taken out of DATABASE_URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsParams {
    pub mode: SslMode,
    pub root_certs: Option<RootCerts>,
    /// `sslcert` and `sslkey`: a client certificate and its key.
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

const TLS_KEYS: [&str; 4] = ["sslmode", "sslrootcert", "sslcert", "sslkey"];

/// Splits `url` (a `postgres://` URL or `key=value` pairs) into what
/// tokio-postgres parses and the TLS settings it does not understand.
pub fn split_url(url: &str) -> Result<(String, TlsParams), String> {
    let (rest, pairs) = match ["postgres://", "postgresql://"]
        .iter()
        .any(|prefix| url.starts_with(prefix))
    {
        true => take_from_url(url),
        false => take_from_keywords(url)?,
    };
    Ok((rest, TlsParams::from_pairs(&pairs)?))
}

/// The TLS keys of a URL's query string (percent-decoded) and the URL without them.
fn take_from_url(url: &str) -> (String, Vec<(String, String)>) {
    // As tokio-postgres reads it: the query starts at the first `?` after the
    // credentials, which end at the first `@`.
    let after_credentials = url.find('@').map_or(0, |at| at + 1);
    let Some(query_start) = url[after_credentials..]
        .find('?')
        .map(|i| after_credentials + i)
    else {
        return (url.to_owned(), Vec::new());
    };
    let decode = |s: &str| percent_decode_str(s).decode_utf8_lossy().into_owned();
    let mut taken = Vec::new();
    let mut kept = Vec::new();
    for param in url[query_start + 1..].split('&') {
        let (key, value) = param.split_once('=').unwrap_or((param, ""));
        let key = decode(key);
        if TLS_KEYS.contains(&key.as_str()) {
            taken.push((key, decode(value)));
        } else {
            kept.push(param);
        }
    }
    let mut rest = url[..query_start].to_owned();
    if !kept.is_empty() {
        rest.push('?');
        rest.push_str(&kept.join("&"));
    }
    (rest, taken)
}

/// The TLS keys of a `key=value …` string (values may be 'quoted', with
/// backslash escapes, as libpq allows) and the string without them.
fn take_from_keywords(conninfo: &str) -> Result<(String, Vec<(String, String)>), String> {
    let mut taken = Vec::new();
    let mut kept = Vec::new();
    let mut chars = conninfo.char_indices().peekable();
    let skip_whitespace = |chars: &mut std::iter::Peekable<std::str::CharIndices>| {
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
    };
    loop {
        skip_whitespace(&mut chars);
        let Some(&(start, _)) = chars.peek() else {
            break;
        };
        let mut key = String::new();
        while let Some((_, c)) = chars.next_if(|(_, c)| !c.is_whitespace() && *c != '=') {
            key.push(c);
        }
        skip_whitespace(&mut chars);
        if chars.next_if(|(_, c)| *c == '=').is_none() {
            return Err(format!("expected `=` after `{key}`"));
        }
        skip_whitespace(&mut chars);
        let quoted = chars.next_if(|(_, c)| *c == '\'').is_some();
        let mut value = String::new();
        let mut end = conninfo.len();
        let mut closed = !quoted;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => value.extend(chars.next().map(|(_, c)| c)),
                '\'' if quoted => {
                    closed = true;
                    end = i + 1;
                    break;
                }
                c if c.is_whitespace() && !quoted => {
                    end = i;
                    break;
                }
                c => value.push(c),
            }
        }
        if !closed {
            return Err(format!("the value of `{key}` lacks its closing quote"));
        }
        if TLS_KEYS.contains(&key.as_str()) {
            taken.push((key, value));
        } else {
            kept.push(&conninfo[start..end]);
        }
    }
    Ok((kept.join(" "), taken))
}

impl TlsParams {
    /// The settings from the TLS keys, the last of a repeated key winning (as in libpq).
    fn from_pairs(pairs: &[(String, String)]) -> Result<Self, String> {
        let last = |name: &str| {
            pairs
                .iter()
                .rev()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.as_str())
        };
        let root_certs = last("sslrootcert").map(|value| match value {
            "system" => RootCerts::System,
            path => RootCerts::File(path.into()),
        });
        let mode = match last("sslmode") {
            None if root_certs == Some(RootCerts::System) => SslMode::VerifyFull,
            None => SslMode::Prefer,
            Some("disable") => SslMode::Disable,
            Some("prefer") => SslMode::Prefer,
            Some("require") => SslMode::Require,
            Some("verify-ca") => SslMode::VerifyCa,
            Some("verify-full") => SslMode::VerifyFull,
            Some(other) => {
                return Err(format!(
                    "sslmode must be disable, prefer, require, verify-ca or verify-full, not `{other}`"
                ));
            }
        };
        // The public web's roots vouch for names, not for whoever holds a certificate.
        if root_certs == Some(RootCerts::System) && mode != SslMode::VerifyFull {
            return Err("sslrootcert=system needs sslmode=verify-full".into());
        }
        if matches!(mode, SslMode::VerifyCa | SslMode::VerifyFull) && root_certs.is_none() {
            return Err(format!(
                "sslmode={} needs sslrootcert: the PEM file of the CA that signed the server's \
                 certificate, or `system` for publicly trusted certificates",
                if mode == SslMode::VerifyCa {
                    "verify-ca"
                } else {
                    "verify-full"
                }
            ));
        }
        let client_cert = match (last("sslcert"), last("sslkey")) {
            (Some(cert), Some(key)) => Some((cert.into(), key.into())),
            (None, None) => None,
            _ => return Err("sslcert and sslkey go together".into()),
        };
        Ok(TlsParams {
            mode,
            root_certs,
            client_cert,
        })
    }

    /// What tokio-postgres must do: whether TLS is tried, and whether it is required.
    pub fn postgres_mode(&self) -> PgSslMode {
        match self.mode {
            SslMode::Disable => PgSslMode::Disable,
            SslMode::Prefer => PgSslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => PgSslMode::Require,
        }
    }

    /// A rustls connector that checks what the mode asks for. It reads the
    /// certificate files each time, so new connections pick up rotated files.
    pub fn connector(&self) -> Result<MakeRustlsConnect, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let algorithms = provider.signature_verification_algorithms;
        let roots = match (&self.root_certs, self.mode) {
            (_, SslMode::Disable) | (None, _) => None,
            (Some(RootCerts::System), _) => Some(RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            }),
            (Some(RootCerts::File(path)), _) => Some(read_roots(path)?),
        };
        let verifier: Arc<dyn ServerCertVerifier> = match roots {
            Some(roots) if self.mode == SslMode::VerifyFull => {
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .map_err(|err| format!("sslrootcert: {err}"))?
            }
            roots => Arc::new(ChainOnly {
                roots: roots.map(Arc::new),
                algorithms,
            }),
        };
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|err| err.to_string())?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let config = match &self.client_cert {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                let chain = CertificateDer::pem_file_iter(cert)
                    .and_then(Iterator::collect)
                    .map_err(|err| format!("reading sslcert {}: {err}", cert.display()))?;
                let key = PrivateKeyDer::from_pem_file(key)
                    .map_err(|err| format!("reading sslkey {}: {err}", key.display()))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|err| format!("sslcert and sslkey: {err}"))?
            }
        };
        Ok(MakeRustlsConnect::new(config))
    }
}

fn read_roots(path: &Path) -> Result<RootCertStore, String> {
    let failed =
        |err: &dyn std::fmt::Display| format!("reading sslrootcert {}: {err}", path.display());
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path).map_err(|err| failed(&err))? {
        roots
            .add(cert.map_err(|err| failed(&err))?)
            .map_err(|err| failed(&err))?;
    }
    if roots.is_empty() {
        return Err(failed(&"no certificate in it"));
    }
    Ok(roots)
}

/// `verify-ca`, and `prefer`/`require`: the chain is checked against `roots`
/// when there are any, never the name; the handshake's signatures always are,
/// so the server must hold the key of the certificate it shows.
#[derive(Debug)]
struct ChainOnly {
    roots: Option<Arc<RootCertStore>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Some(roots) = &self.roots {
            rustls::client::verify_server_cert_signed_by_trust_anchor(
                &ParsedCertificate::try_from(end_entity)?,
                roots,
                intermediates,
                now,
                self.algorithms.all,
            )?;
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(mode: SslMode, root: Option<&str>) -> TlsParams {
        TlsParams {
            mode,
            root_certs: root.map(|r| match r {
                "system" => RootCerts::System,
                path => RootCerts::File(path.into()),
            }),
            client_cert: None,
        }
    }

    #[test]
    fn tls_keys_leave_the_url_and_the_rest_stays_as_written() {
        let (rest, tls) = split_url(
            "postgres://u:p%3F@db:5432/orgd?application_name=a&sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&connect_timeout=5",
        )
        .unwrap();
        assert_eq!(
            rest,
            "postgres://u:p%3F@db:5432/orgd?application_name=a&connect_timeout=5"
        );
        assert_eq!(tls, params(SslMode::VerifyFull, Some("/etc/ca.pem")));

        let (rest, tls) = split_url("postgresql://db/orgd?sslmode=require").unwrap();
        assert_eq!(rest, "postgresql://db/orgd");
        assert_eq!(tls, params(SslMode::Require, None));
    }

    #[test]
    fn a_question_mark_in_the_credentials_is_not_the_query() {
        let (rest, tls) = split_url("postgres://u:a?b@db/orgd?sslmode=disable").unwrap();
        assert_eq!(rest, "postgres://u:a?b@db/orgd");
        assert_eq!(tls.mode, SslMode::Disable);
    }

    #[test]
    fn tls_keys_leave_a_keyword_string_with_its_quoting() {
        let (rest, tls) = split_url(
            r"host=db  sslmode = verify-ca user='o\'rg d' sslrootcert='/etc/my ca.pem' sslcert=/c.pem sslkey=/k.pem",
        )
        .unwrap();
        assert_eq!(rest, r"host=db user='o\'rg d'");
        assert_eq!(
            tls,
            TlsParams {
                client_cert: Some(("/c.pem".into(), "/k.pem".into())),
                ..params(SslMode::VerifyCa, Some("/etc/my ca.pem"))
            }
        );
        // What is left is still what tokio-postgres understands.
        let parsed: tokio_postgres::Config = rest.parse().unwrap();
        assert_eq!(parsed.get_user(), Some("o'rg d"));
    }

    #[test]
    fn defaults_follow_libpq() {
        assert_eq!(
            split_url("postgres://db/orgd").unwrap().1,
            params(SslMode::Prefer, None)
        );
        assert_eq!(
            split_url("host=db sslrootcert=system").unwrap().1,
            params(SslMode::VerifyFull, Some("system"))
        );
        // The last of a repeated key wins.
        assert_eq!(
            split_url("postgres://db?sslmode=disable&sslmode=require")
                .unwrap()
                .1
                .mode,
            SslMode::Require
        );
    }

    #[test]
    fn settings_that_cannot_be_honoured_are_refused() {
        for (url, expected) in [
            ("postgres://db?sslmode=allow", "not `allow`"),
            (
                "postgres://db?sslmode=verify-full",
                "verify-full needs sslrootcert",
            ),
            ("host=db sslmode=verify-ca", "verify-ca needs sslrootcert"),
            (
                "postgres://db?sslmode=require&sslrootcert=system",
                "needs sslmode=verify-full",
            ),
            ("postgres://db?sslcert=/c.pem", "go together"),
            ("host=db sslmode", "expected `=` after `sslmode`"),
            ("host=db password='open", "closing quote"),
        ] {
            let err = split_url(url).unwrap_err();
            assert!(err.contains(expected), "{url}: {err}");
        }
    }

    #[test]
    fn verification_needs_a_readable_root_file() {
        let missing = params(SslMode::VerifyFull, Some("/nonexistent/ca.pem"));
        let err = missing.connector().err().unwrap();
        assert!(
            err.contains("reading sslrootcert /nonexistent/ca.pem"),
            "{err}"
        );
        // Without verification no file is read.
        assert!(params(SslMode::Require, None).connector().is_ok());
        assert!(
            params(SslMode::Disable, Some("/nonexistent/ca.pem"))
                .connector()
                .is_ok()
        );
    }

    #[test]
    fn only_disable_turns_tls_off_and_only_prefer_falls_back() {
        for (mode, expected) in [
            (SslMode::Disable, PgSslMode::Disable),
            (SslMode::Prefer, PgSslMode::Prefer),
            (SslMode::Require, PgSslMode::Require),
            (SslMode::VerifyCa, PgSslMode::Require),
            (SslMode::VerifyFull, PgSslMode::Require),
        ] {
            assert_eq!(params(mode, Some("/ca.pem")).postgres_mode(), expected);
        }
    }
}
