//! TC3-HMAC-SHA256, exactly as the wire reference describes it: parse `Authorization`, rebuild
//! the canonical request from the raw method, query string, signed header values and body
//! bytes, derive the signing key from the secret, date and service, and compare in constant time.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// The only signature algorithm accepted.
pub const ALGORITHM: &str = "TC3-HMAC-SHA256";
/// Largest accepted difference between the request's timestamp and the server's clock.
pub const MAX_CLOCK_SKEW_SECS: i64 = imaged_app::service::SIGNATURE_WINDOW_SECS;
/// The payload marker a client may send in `X-TC-Content-SHA256`.
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";

/// A parsed `Authorization` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    /// The key id.
    pub secret_id: String,
    /// Scope date, `YYYY-MM-DD`.
    pub date: String,
    /// Scope service, e.g. `cvm`.
    pub service: String,
    /// Signed header names, lower-case, in the order given.
    pub signed_headers: Vec<String>,
    /// Hex signature.
    pub signature: String,
}

impl Authorization {
    /// Parses `TC3-HMAC-SHA256 Credential=ID/DATE/SERVICE/tc3_request, SignedHeaders=a;b, Signature=HEX`.
    /// `None` when malformed or another algorithm.
    pub fn parse(header: &str) -> Option<Self> {
        let rest = header.trim().strip_prefix(ALGORITHM)?;
        if !rest.starts_with(' ') {
            return None;
        }
        let (mut credential, mut signed, mut signature) = (None, None, None);
        for part in rest.split(',') {
            let (k, v) = part.trim().split_once('=')?;
            let slot = match k {
                "Credential" => &mut credential,
                "SignedHeaders" => &mut signed,
                "Signature" => &mut signature,
                _ => return None,
            };
            if slot.replace(v.trim()).is_some() {
                return None;
            }
        }
        let mut scope = credential?.split('/');
        let (secret_id, date, service, term) = (scope.next()?, scope.next()?, scope.next()?, scope.next()?);
        if scope.next().is_some() || term != "tc3_request" || secret_id.is_empty() || service.is_empty() {
            return None;
        }
        let signed_headers: Vec<String> = signed?.split(';').map(str::to_ascii_lowercase).collect();
        let signature = signature?;
        let hex_ok = signature.len() == 64 && signature.bytes().all(|b| b.is_ascii_hexdigit());
        if !hex_ok || signed_headers.iter().any(String::is_empty) {
            return None;
        }
        Some(Self {
            secret_id: secret_id.to_owned(),
            date: date.to_owned(),
            service: service.to_owned(),
            signed_headers,
            signature: signature.to_ascii_lowercase(),
        })
    }

    /// `DATE/SERVICE/tc3_request`.
    pub fn scope(&self) -> String {
        format!("{}/{}/tc3_request", self.date, self.service)
    }
}

/// The parts of a request the signature covers, as received.
#[derive(Debug, Clone, Copy)]
pub struct SignedRequest<'a> {
    /// `GET` or `POST`.
    pub method: &'a str,
    /// The request's path (`/` for the API, `/upload`, `/download`): the canonical URI.
    pub path: &'a str,
    /// The raw query string after `?` (empty for POST).
    pub query: &'a str,
    /// The value of each signed header, in the order of `SignedHeaders` (`None` when absent).
    pub header_values: &'a [Option<&'a str>],
    /// Raw body bytes.
    pub body: &'a [u8],
    /// Whether `X-TC-Content-SHA256: UNSIGNED-PAYLOAD` was sent.
    pub unsigned_payload: bool,
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn hmac(key: &[u8], msg: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length, so `new_from_slice` cannot fail here.
    let mut mac = HmacSha256::new_from_slice(key).unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(msg);
    mac.finalize().into_bytes().into()
}

/// The canonical request (step 1).
pub fn canonical_request(auth: &Authorization, req: &SignedRequest<'_>) -> String {
    let mut out = String::with_capacity(256);
    out.push_str(req.method);
    out.push('\n');
    out.push_str(req.path);
    out.push('\n');
    out.push_str(req.query);
    out.push('\n');
    for (name, value) in auth.signed_headers.iter().zip(req.header_values) {
        out.push_str(name);
        out.push(':');
        out.push_str(&value.unwrap_or("").trim().to_ascii_lowercase());
        out.push('\n');
    }
    out.push('\n');
    out.push_str(&auth.signed_headers.join(";"));
    out.push('\n');
    if req.unsigned_payload {
        out.push_str(&sha256_hex(UNSIGNED_PAYLOAD.as_bytes()));
    } else {
        out.push_str(&sha256_hex(req.body));
    }
    out
}

/// The string to sign (step 2).
pub fn string_to_sign(timestamp: &str, scope: &str, canonical_request: &str) -> String {
    format!("{ALGORITHM}\n{timestamp}\n{scope}\n{}", sha256_hex(canonical_request.as_bytes()))
}

/// The signature (steps 3 and 4) as lower-case hex.
pub fn sign(secret_key: &str, date: &str, service: &str, string_to_sign: &str) -> String {
    let k_date = hmac(format!("TC3{secret_key}").as_bytes(), date.as_bytes());
    let k_service = hmac(&k_date, service.as_bytes());
    let k_signing = hmac(&k_service, b"tc3_request");
    hex::encode(hmac(&k_signing, string_to_sign.as_bytes()))
}

/// Whether `auth.signature` is the signature of `req` under `secret_key`, compared in constant time.
pub fn verify(auth: &Authorization, req: &SignedRequest<'_>, timestamp: &str, secret_key: &str) -> bool {
    let canonical = canonical_request(auth, req);
    let sts = string_to_sign(timestamp, &auth.scope(), &canonical);
    let expected = sign(secret_key, &auth.date, &auth.service, &sts);
    constant_time_eq(expected.as_bytes(), auth.signature.as_bytes())
}

/// What a client signs: the request line, the two default signed headers and the body.
#[derive(Debug, Clone, Copy)]
pub struct ClientRequest<'a> {
    /// `GET` or `POST`.
    pub method: &'a str,
    /// The path (`/` for the API).
    pub path: &'a str,
    /// Raw query string (GET).
    pub query: &'a str,
    /// `Content-Type` as sent.
    pub content_type: &'a str,
    /// `Host` as sent.
    pub host: &'a str,
    /// Body bytes (POST).
    pub body: &'a [u8],
}

/// The `Authorization` header a client sends (signing `content-type;host`, as the official SDKs do).
pub fn authorization_header(
    secret_id: &str,
    secret_key: &str,
    service: &str,
    timestamp: i64,
    req: &ClientRequest<'_>,
) -> String {
    authorization_header_with(secret_id, secret_key, service, timestamp, req, false)
}

/// As [`authorization_header`], optionally for an `UNSIGNED-PAYLOAD` body.
pub fn authorization_header_with(
    secret_id: &str,
    secret_key: &str,
    service: &str,
    timestamp: i64,
    req: &ClientRequest<'_>,
    unsigned_payload: bool,
) -> String {
    authorization_header_signing(secret_id, secret_key, service, timestamp, req, unsigned_payload, &[])
}

/// The header that makes each of `imaged`'s own requests unique, so that two identical
/// requests within one second are not taken for a replay: a random value, signed.
pub const NONCE_HEADER: &str = "x-imaged-nonce";

/// As [`authorization_header_with`], also signing `extra` headers (lower-case name, value),
/// which the request must then carry.
pub fn authorization_header_signing(
    secret_id: &str,
    secret_key: &str,
    service: &str,
    timestamp: i64,
    req: &ClientRequest<'_>,
    unsigned_payload: bool,
    extra: &[(&str, &str)],
) -> String {
    let date = imaged_domain::time::Timestamp(timestamp).utc_date();
    let mut signed_headers: Vec<String> = vec!["content-type".into(), "host".into()];
    signed_headers.extend(extra.iter().map(|(name, _)| (*name).to_owned()));
    let auth = Authorization {
        secret_id: secret_id.to_owned(),
        date,
        service: service.to_owned(),
        signed_headers,
        signature: String::new(),
    };
    let mut values = vec![Some(req.content_type), Some(req.host)];
    values.extend(extra.iter().map(|(_, value)| Some(*value)));
    let signed = SignedRequest {
        method: req.method,
        path: req.path,
        query: req.query,
        header_values: &values,
        body: req.body,
        unsigned_payload,
    };
    let sts = string_to_sign(&timestamp.to_string(), &auth.scope(), &canonical_request(&auth, &signed));
    let signature = sign(secret_key, &auth.date, service, &sts);
    format!(
        "{ALGORITHM} Credential={secret_id}/{}, SignedHeaders={}, Signature={signature}",
        auth.scope(),
        auth.signed_headers.join(";")
    )
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET_ID: &str = "AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE";
    const SECRET_KEY: &str = "Gu5t9xGARNpq86cd98joQYCN3EXAMPLE";
    const TIMESTAMP: &str = "1551113065";

    fn auth(service: &str, signature: &str) -> Authorization {
        Authorization::parse(&format!(
            "TC3-HMAC-SHA256 Credential={SECRET_ID}/2019-02-25/{service}/tc3_request, SignedHeaders=content-type;host, Signature={signature}"
        ))
        .expect("parses")
    }

    #[allow(clippy::too_many_arguments)]
    fn check(service: &str, method: &str, query: &str, ct: &str, host: &str, body: &[u8], creq_hash: &str, sig: &str) {
        let a = auth(service, sig);
        let values = [Some(ct), Some(host)];
        let req = SignedRequest { method, path: "/", query, header_values: &values, body, unsigned_payload: false };
        let canonical = canonical_request(&a, &req);
        assert_eq!(sha256_hex(canonical.as_bytes()), creq_hash);
        let sts = string_to_sign(TIMESTAMP, &a.scope(), &canonical);
        assert_eq!(sign(SECRET_KEY, "2019-02-25", service, &sts), sig);
        assert!(verify(&a, &req, TIMESTAMP, SECRET_KEY));
        assert!(!verify(&a, &req, TIMESTAMP, "wrong"));
        assert!(!verify(&a, &req, "1551113066", SECRET_KEY));
    }

    #[test]
    fn vector_a_official_docs_post() {
        let body = br#"{"Limit": 1, "Filters": [{"Values": ["\u672a\u547d\u540d"], "Name": "instance-name"}]}"#;
        assert_eq!(sha256_hex(body), "35e9c5b0e3ae67532d3c9f17ead6c90222632e5b1ff7f6e89887f1398934f064");
        check(
            "cvm",
            "POST",
            "",
            "application/json; charset=utf-8",
            "cvm.tencentcloudapi.com",
            body,
            "5ffe6a04c0664d6b969fab9a13bdab201d63ee709638e2749d62a09ca18d7031",
            "72e494ea809ad7a8c8f7a4507b9bddcbaa8e581f516e8da2f66e2c5a96525168",
        );
    }

    #[test]
    fn vector_b_get_to_loopback() {
        check(
            "cvm",
            "GET",
            "ImageIds.0=img-loopback1&Limit=10",
            "application/x-www-form-urlencoded",
            "127.0.0.1:8080",
            b"",
            "da7020907dd3d48159abcaee080a657d600a6e60a9826e9cf0783db06a62dd2f",
            "974bad9b6cb7df21c7d983e19ba01ed80dd7c000b00d2553bf41d1aba46f4901",
        );
    }

    #[test]
    fn vector_c_tke_post() {
        let body = br#"{"Filters": []}"#;
        assert_eq!(sha256_hex(body), "d7f9e5abf085d19cd8b00ac2887b6e8b416e2474b856a802abc3837bf178af9d");
        check(
            "tke",
            "POST",
            "",
            "application/json",
            "127.0.0.1:8080",
            body,
            "2eda9761a3715ccfe68d21e16dfb7db18f7a25eb3140739e481b23adbb8f0499",
            "84ab30825320b732a5d1bd45979d4c7b93232d5132a9beaaad7d19e932cb2e1a",
        );
    }

    #[test]
    fn client_headers_reproduce_vector_a_and_parse_back() {
        let body = br#"{"Limit": 1, "Filters": [{"Values": ["\u672a\u547d\u540d"], "Name": "instance-name"}]}"#;
        let req = ClientRequest {
            method: "POST",
            path: "/",
            query: "",
            content_type: "application/json; charset=utf-8",
            host: "cvm.tencentcloudapi.com",
            body,
        };
        let header = authorization_header(SECRET_ID, SECRET_KEY, "cvm", 1_551_113_065, &req);
        assert!(header.ends_with("Signature=72e494ea809ad7a8c8f7a4507b9bddcbaa8e581f516e8da2f66e2c5a96525168"));
        assert_eq!(Authorization::parse(&header).map(|a| a.secret_id), Some(SECRET_ID.to_owned()));
    }

    #[test]
    fn authorization_parsing_refuses_malformed_headers() {
        let good = auth("cvm", &"a".repeat(64));
        assert_eq!(good.secret_id, SECRET_ID);
        assert_eq!(good.scope(), "2019-02-25/cvm/tc3_request");
        let sig = "0".repeat(64);
        for bad in [
            String::new(),
            format!("HMAC-SHA1 Credential={SECRET_ID}/2019-02-25/cvm/tc3_request, SignedHeaders=host, Signature={sig}"),
            format!("TC3-HMAC-SHA256 Credential={SECRET_ID}/2019-02-25/cvm, SignedHeaders=host, Signature={sig}"),
            format!("TC3-HMAC-SHA256 Credential={SECRET_ID}/2019-02-25/cvm/tc3_request, Signature={sig}"),
            format!("TC3-HMAC-SHA256 Credential={SECRET_ID}/2019-02-25/cvm/tc3_request, SignedHeaders=host, Signature=xyz"),
            format!("TC3-HMAC-SHA256 Credential=/2019-02-25/cvm/tc3_request, SignedHeaders=host, Signature={sig}"),
            format!("TC3-HMAC-SHA256Credential={SECRET_ID}/2019-02-25/cvm/tc3_request, SignedHeaders=host, Signature={sig}"),
            format!("TC3-HMAC-SHA256 Credential={SECRET_ID}/d/cvm/tc3_request, SignedHeaders=host, Signature={sig}, Signature={sig}"),
        ] {
            assert_eq!(Authorization::parse(&bad), None, "{bad:?} must not parse");
        }
    }

    #[test]
    fn unsigned_payload_hashes_the_marker_not_the_body() {
        let a = auth("cvm", &"0".repeat(64));
        let values = [Some("application/json"), Some("h")];
        let signed = SignedRequest {
            method: "POST",
            path: "/",
            query: "",
            header_values: &values,
            body: b"{}",
            unsigned_payload: true,
        };
        let other_body = SignedRequest { body: b"{\"x\":1}", ..signed };
        assert_eq!(canonical_request(&a, &signed), canonical_request(&a, &other_body));
        assert!(canonical_request(&a, &signed).ends_with(&sha256_hex(b"UNSIGNED-PAYLOAD")));
    }
}
