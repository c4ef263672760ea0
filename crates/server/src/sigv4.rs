//! AWS Signature Version 4: the canonical request, the signing key and the signature,
//! used both ways: the server verifies what boto3 and the AWS CLI sign, and temper's
//! own client (`temper-server logs`, the load test) signs the same way.
//!
//! Written here because the maintained crates only sign (aws-sigv4 decides itself
//! which headers to sign, so it cannot recompute a signature over the headers a
//! client chose). The algorithm is AWS's, step by step:
//! <https://docs.aws.amazon.com/IAM/latest/UserGuide/create-signed-request.html>.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// How far a request's `X-Amz-Date` may be from the server's clock (AWS allows 15 min).
pub const MAX_SKEW_SECS: i64 = 15 * 60;

/// Why a request's signature was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigError {
    #[error("the request has no Authorization header; sign it with AWS Signature Version 4")]
    Missing,
    #[error("the Authorization header is malformed: {0}")]
    Malformed(String),
    #[error("the access key {0} is not in the server's credentials file")]
    UnknownKey(String),
    #[error("the request signature does not match the one computed with the secret key of {0}; check the secret key and signing method")]
    Mismatch(String),
    #[error(
        "the signature expired: X-Amz-Date {date} is more than 15 minutes from the server's time"
    )]
    Expired { date: String },
}

/// The parts of an `Authorization: AWS4-HMAC-SHA256 ...` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    pub access_key: String,
    /// `YYYYMMDD` of the credential scope.
    pub date: String,
    pub region: String,
    pub service: String,
    /// Lower-case header names, in the order given (AWS requires them sorted).
    pub signed_headers: Vec<String>,
    pub signature: String,
}

impl Authorization {
    /// Parses `AWS4-HMAC-SHA256 Credential=AK/20261201/us-east-1/sagemaker/aws4_request,
    /// SignedHeaders=host;x-amz-date, Signature=<hex>`.
    pub fn parse(header: &str) -> Result<Self, SigError> {
        let bad = |why: &str| SigError::Malformed(why.to_string());
        let rest = header
            .strip_prefix(ALGORITHM)
            .ok_or_else(|| bad("it does not start with AWS4-HMAC-SHA256"))?;
        let mut fields = BTreeMap::new();
        for part in rest.split(',') {
            let (k, v) = part
                .trim()
                .split_once('=')
                .ok_or_else(|| bad("a field has no '='"))?;
            fields.insert(k.trim(), v.trim());
        }
        let field = |name: &str| {
            fields
                .get(name)
                .copied()
                .ok_or_else(|| SigError::Malformed(format!("it has no {name} field")))
        };
        let scope: Vec<&str> = field("Credential")?.split('/').collect();
        if scope.len() != 5 || scope[4] != "aws4_request" {
            return Err(bad(
                "Credential is not <key>/<date>/<region>/<service>/aws4_request",
            ));
        }
        let signed_headers: Vec<String> = field("SignedHeaders")?
            .split(';')
            .map(str::to_string)
            .collect();
        if !signed_headers.iter().any(|h| h == "host") {
            return Err(bad("SignedHeaders must include host"));
        }
        Ok(Authorization {
            access_key: scope[0].to_string(),
            date: scope[1].to_string(),
            region: scope[2].to_string(),
            service: scope[3].to_string(),
            signed_headers,
            signature: field("Signature")?.to_string(),
        })
    }
}

/// What is signed of an HTTP request.
#[derive(Debug, Clone)]
pub struct RequestParts<'a> {
    pub method: &'a str,
    /// The path as sent (already URI-encoded), e.g. `/`.
    pub path: &'a str,
    /// The raw query string without `?` (may be empty).
    pub query: &'a str,
    /// Every header, names in any case; repeated names appear repeatedly.
    pub headers: &'a [(String, String)],
    pub body: &'a [u8],
}

/// The canonical request over `signed_headers` (lower-case names).
pub fn canonical_request(req: &RequestParts, signed_headers: &[String]) -> String {
    let mut out = String::new();
    out.push_str(req.method);
    out.push('\n');
    out.push_str(if req.path.is_empty() { "/" } else { req.path });
    out.push('\n');
    out.push_str(&canonical_query(req.query));
    out.push('\n');
    for name in signed_headers {
        let values: Vec<String> = req
            .headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        out.push_str(name);
        out.push(':');
        out.push_str(&values.join(","));
        out.push('\n');
    }
    out.push('\n');
    out.push_str(&signed_headers.join(";"));
    out.push('\n');
    out.push_str(&hex::encode(Sha256::digest(req.body)));
    out
}

/// Query parameters sorted by name then value, each already percent-encoded by the
/// client (botocore encodes with AWS's unreserved set, as the server receives them).
fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(&str, &str)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// The hex signature of a canonical request made at `amz_date` (`YYYYMMDDTHHMMSSZ`).
pub fn signature(
    secret: &str,
    amz_date: &str,
    region: &str,
    service: &str,
    canonical: &str,
) -> String {
    let day = &amz_date[..amz_date.len().min(8)];
    let scope = format!("{day}/{region}/{service}/aws4_request");
    let to_sign = format!(
        "{ALGORITHM}\n{amz_date}\n{scope}\n{}",
        hex::encode(Sha256::digest(canonical.as_bytes()))
    );
    let k_date = hmac(format!("AWS4{secret}").as_bytes(), day.as_bytes());
    let k_region = hmac(&k_date, region.as_bytes());
    let k_service = hmac(&k_region, service.as_bytes());
    let k_signing = hmac(&k_service, b"aws4_request");
    hex::encode(hmac(&k_signing, to_sign.as_bytes()))
}

/// Verifies a request against the secret keys in `secrets` (access key -> secret);
/// `now` is the server's time in seconds since the epoch. Returns the parsed header
/// (whose region the server uses in ARNs).
pub fn verify(
    req: &RequestParts,
    secrets: &BTreeMap<String, String>,
    now: i64,
) -> Result<Authorization, SigError> {
    let auth_header = header(req.headers, "authorization").ok_or(SigError::Missing)?;
    let auth = Authorization::parse(auth_header)?;
    let amz_date = header(req.headers, "x-amz-date")
        .ok_or_else(|| SigError::Malformed("the request has no X-Amz-Date header".into()))?;
    let signed_at = parse_amz_date(amz_date).ok_or_else(|| {
        SigError::Malformed(format!("X-Amz-Date {amz_date} is not YYYYMMDDTHHMMSSZ"))
    })?;
    if amz_date.get(..8) != Some(auth.date.as_str()) {
        return Err(SigError::Malformed(format!(
            "the credential scope date {} differs from X-Amz-Date {amz_date}",
            auth.date
        )));
    }
    if (now - signed_at).abs() > MAX_SKEW_SECS {
        return Err(SigError::Expired {
            date: amz_date.to_string(),
        });
    }
    let secret = secrets
        .get(&auth.access_key)
        .ok_or_else(|| SigError::UnknownKey(auth.access_key.clone()))?;
    let canonical = canonical_request(req, &auth.signed_headers);
    let expected = signature(secret, amz_date, &auth.region, &auth.service, &canonical);
    // Both are hex of a 32-byte MAC; compare in constant time so the comparison does
    // not tell an attacker how many leading characters were right.
    let matches = expected.len() == auth.signature.len()
        && expected
            .bytes()
            .zip(auth.signature.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if matches {
        Ok(auth)
    } else {
        Err(SigError::Mismatch(auth.access_key))
    }
}

/// Signs a request: returns the `X-Amz-Date` and `Authorization` headers to add. The
/// request's headers must already hold `host` and anything else to be signed.
pub fn sign(
    req: &RequestParts,
    access_key: &str,
    secret: &str,
    region: &str,
    service: &str,
    now: i64,
) -> [(String, String); 2] {
    let amz_date = format_amz_date(now);
    let mut headers = req.headers.to_vec();
    headers.push(("x-amz-date".into(), amz_date.clone()));
    let mut signed: Vec<String> = headers
        .iter()
        .map(|(k, _)| k.to_ascii_lowercase())
        .collect();
    signed.sort();
    signed.dedup();
    let parts = RequestParts {
        headers: &headers,
        ..req.clone()
    };
    let canonical = canonical_request(&parts, &signed);
    let sig = signature(secret, &amz_date, region, service, &canonical);
    let auth = format!(
        "{ALGORITHM} Credential={access_key}/{}/{region}/{service}/aws4_request, SignedHeaders={}, Signature={sig}",
        &amz_date[..8],
        signed.join(";")
    );
    [
        ("x-amz-date".into(), amz_date),
        ("authorization".into(), auth),
    ]
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// `YYYYMMDDTHHMMSSZ` -> seconds since the epoch.
pub fn parse_amz_date(s: &str) -> Option<i64> {
    let ts: jiff::Timestamp = jiff::fmt::strtime::parse("%Y%m%dT%H%M%SZ", s)
        .ok()?
        .to_datetime()
        .ok()?
        .to_zoned(jiff::tz::TimeZone::UTC)
        .ok()?
        .timestamp();
    Some(ts.as_second())
}

/// Seconds since the epoch -> `YYYYMMDDTHHMMSSZ`.
pub fn format_amz_date(secs: i64) -> String {
    let ts = jiff::Timestamp::from_second(secs).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    ts.strftime("%Y%m%dT%H%M%SZ").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// AWS's published example (IAM user guide, "GET iam ListUsers" with the example
    /// key pair), which fixes every step of the algorithm.
    #[test]
    fn matches_aws_published_example() {
        let headers = vec![
            (
                "Content-Type".to_string(),
                "application/x-www-form-urlencoded; charset=utf-8".to_string(),
            ),
            ("Host".to_string(), "iam.amazonaws.com".to_string()),
            ("X-Amz-Date".to_string(), "20150830T123600Z".to_string()),
        ];
        let req = RequestParts {
            method: "GET",
            path: "/",
            query: "Version=2010-05-08&Action=ListUsers",
            headers: &headers,
            body: b"",
        };
        let signed: Vec<String> = ["content-type", "host", "x-amz-date"]
            .map(String::from)
            .to_vec();
        let canonical = canonical_request(&req, &signed);
        assert_eq!(
            hex::encode(Sha256::digest(canonical.as_bytes())),
            "f536975d06c0309214f805bb90ccff089219ecd68b2577efef23edd43b7e1a59"
        );
        let sig = signature(
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            "20150830T123600Z",
            "us-east-1",
            "iam",
            &canonical,
        );
        assert_eq!(
            sig,
            "5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"
        );
    }

    fn secrets() -> BTreeMap<String, String> {
        BTreeMap::from([("AKIDTEST".to_string(), "secret-one".to_string())])
    }

    fn signed_request(body: &[u8], secret: &str, now: i64) -> Vec<(String, String)> {
        let mut headers = vec![
            ("Host".to_string(), "127.0.0.1:8080".to_string()),
            (
                "X-Amz-Target".to_string(),
                "SageMaker.ListOptimizationJobs".to_string(),
            ),
        ];
        let req = RequestParts {
            method: "POST",
            path: "/",
            query: "",
            headers: &headers,
            body,
        };
        let added = sign(&req, "AKIDTEST", secret, "us-west-2", "sagemaker", now);
        headers.extend(added);
        headers
    }

    #[test]
    fn signed_requests_verify_and_tampering_is_caught() {
        let now = 1_790_000_000;
        let body = br#"{"MaxResults": 5}"#;
        let headers = signed_request(body, "secret-one", now);
        fn check(
            headers: &[(String, String)],
            body: &[u8],
            keys: &BTreeMap<String, String>,
            now: i64,
        ) -> Result<Authorization, SigError> {
            let req = RequestParts {
                method: "POST",
                path: "/",
                query: "",
                headers,
                body,
            };
            verify(&req, keys, now)
        }
        let auth = check(&headers, body, &secrets(), now + 60).unwrap();
        assert_eq!(auth.region, "us-west-2");
        assert_eq!(auth.access_key, "AKIDTEST");

        // Another body, another target header, a wrong secret, a stale date, no header.
        assert!(matches!(
            check(&headers, br#"{"MaxResults": 6}"#, &secrets(), now),
            Err(SigError::Mismatch(_))
        ));
        let mut other_target = headers.clone();
        other_target[1].1 = "SageMaker.DeleteOptimizationJob".into();
        assert!(matches!(
            check(&other_target, body, &secrets(), now),
            Err(SigError::Mismatch(_))
        ));
        let wrong = signed_request(body, "secret-two", now);
        assert!(matches!(
            check(&wrong, body, &secrets(), now),
            Err(SigError::Mismatch(_))
        ));
        assert!(matches!(
            check(&headers, body, &secrets(), now + MAX_SKEW_SECS + 1),
            Err(SigError::Expired { .. })
        ));
        let unsigned = &headers[..2];
        assert_eq!(
            check(unsigned, body, &secrets(), now),
            Err(SigError::Missing)
        );
        let unknown = BTreeMap::from([("OTHER".to_string(), "x".to_string())]);
        assert!(matches!(
            check(&headers, body, &unknown, now),
            Err(SigError::UnknownKey(_))
        ));
    }

    #[test]
    fn malformed_headers_are_named() {
        for (header, why) in [
            ("Basic abc", "AWS4-HMAC-SHA256"),
            ("AWS4-HMAC-SHA256 Credential=a/b/c, SignedHeaders=host, Signature=00", "Credential"),
            (
                "AWS4-HMAC-SHA256 Credential=a/20261201/r/s/aws4_request, SignedHeaders=x-amz-date, Signature=00",
                "host",
            ),
        ] {
            let err = Authorization::parse(header).unwrap_err();
            assert!(err.to_string().contains(why), "{err}");
        }
        assert_eq!(parse_amz_date("20150830T123600Z"), Some(1_440_938_160));
        assert_eq!(format_amz_date(1_440_938_160), "20150830T123600Z");
        assert_eq!(parse_amz_date("2015-08-30"), None);
    }
}
