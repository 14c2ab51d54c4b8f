//! JSON Web Tokens for auth tests, signed by the `openssl` command.
//!
//! Tests need tokens herald must accept (HS256, RS256, ES256) and tokens it
//! must refuse (expired, not yet valid, wrong key, `alg: none`, another
//! algorithm's header over the same signature). Signing with the `openssl`
//! command rather than a JWT library keeps the test side independent of the
//! crate herald verifies with, and gives real RSA and EC keys generated
//! fresh for each test. The encoding around the signature (base64url, the
//! DER-to-raw form of ECDSA signatures JWS uses) is short and done here.

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use serde_json::{json, Value};
use tempfile::TempDir;

/// Seconds since the Unix epoch, as JWT `exp` and `nbf` count them.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs()
}

/// What signs tokens: an HS256 secret, or an RSA or EC key pair generated
/// by `openssl` in a temporary directory that lives as long as the signer
/// (herald reads the public key from its file).
#[derive(Debug, Clone)]
pub struct TokenSigner {
    alg: &'static str,
    key: Key,
}

#[derive(Debug, Clone)]
enum Key {
    Secret(Vec<u8>),
    Pair {
        dir: Arc<TempDir>,
        private: PathBuf,
        public: PathBuf,
    },
}

impl TokenSigner {
    /// HS256 with `secret` (herald's `auth.jwt_secret`).
    pub fn hs256(secret: &str) -> Self {
        Self {
            alg: "HS256",
            key: Key::Secret(secret.as_bytes().to_vec()),
        }
    }

    /// RS256 with a fresh 2048-bit RSA key.
    ///
    /// # Panics
    ///
    /// When `openssl` is missing or fails.
    pub fn rs256() -> Self {
        Self::pair(
            "RS256",
            &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
        )
    }

    /// ES256 with a fresh P-256 key.
    ///
    /// # Panics
    ///
    /// When `openssl` is missing or fails.
    pub fn es256() -> Self {
        Self::pair(
            "ES256",
            &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
        )
    }

    fn pair(alg: &'static str, genpkey: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("creating a temporary directory");
        let private = dir.path().join("private.pem");
        let public = dir.path().join("public.pem");
        let mut generate = vec!["genpkey"];
        generate.extend_from_slice(genpkey);
        generate.extend(["-out", path_str(&private)]);
        openssl(&generate, &[]);
        openssl(
            &[
                "pkey",
                "-in",
                path_str(&private),
                "-pubout",
                "-out",
                path_str(&public),
            ],
            &[],
        );
        Self {
            alg,
            key: Key::Pair {
                dir: Arc::new(dir),
                private,
                public,
            },
        }
    }

    /// The algorithm this signer writes in token headers.
    pub fn alg(&self) -> &'static str {
        self.alg
    }

    /// The PEM file of the public key (herald's
    /// `auth.jwt_public_key_file`); `None` for HS256.
    pub fn public_key_file(&self) -> Option<&Path> {
        match &self.key {
            Key::Secret(_) => None,
            Key::Pair { public, dir, .. } => {
                debug_assert!(public.starts_with(dir.path()));
                Some(public)
            }
        }
    }

    /// A token with `claims` and the header `{"alg": <alg>, "typ": "JWT"}`.
    ///
    /// # Panics
    ///
    /// When `openssl` fails.
    pub fn sign(&self, claims: &Value) -> String {
        self.sign_with_header(&json!({"alg": self.alg, "typ": "JWT"}), claims)
    }

    /// A token with any header (another `alg`, for algorithm-confusion
    /// tests), signed with this signer's key and algorithm all the same.
    ///
    /// # Panics
    ///
    /// When `openssl` fails.
    pub fn sign_with_header(&self, header: &Value, claims: &Value) -> String {
        let signing_input = format!(
            "{}.{}",
            base64url(header.to_string().as_bytes()),
            base64url(claims.to_string().as_bytes())
        );
        let signature = match &self.key {
            Key::Secret(secret) => {
                let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
                let macopt = format!("hexkey:{hex}");
                openssl(
                    &[
                        "dgst", "-sha256", "-mac", "HMAC", "-macopt", &macopt, "-binary",
                    ],
                    signing_input.as_bytes(),
                )
            }
            Key::Pair { private, .. } => {
                let der_or_raw = openssl(
                    &["dgst", "-sha256", "-sign", path_str(private), "-binary"],
                    signing_input.as_bytes(),
                );
                if self.alg == "ES256" {
                    ecdsa_der_to_raw(&der_or_raw)
                } else {
                    der_or_raw
                }
            }
        };
        format!("{signing_input}.{}", base64url(&signature))
    }
}

/// A token with `alg: none` and no signature, which herald must never
/// accept.
pub fn unsigned_token(claims: &Value) -> String {
    format!(
        "{}.{}.",
        base64url(json!({"alg": "none", "typ": "JWT"}).to_string().as_bytes()),
        base64url(claims.to_string().as_bytes())
    )
}

/// Base64url without padding (RFC 7515 §2).
pub fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | (u32::from(b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

/// JWS ES256 signatures are `r || s`, 32 bytes each; OpenSSL writes the DER
/// `SEQUENCE { INTEGER r, INTEGER s }`.
fn ecdsa_der_to_raw(der: &[u8]) -> Vec<u8> {
    fn integer(rest: &[u8]) -> (&[u8], &[u8]) {
        assert_eq!(rest[0], 0x02, "a DER INTEGER");
        let len = usize::from(rest[1]);
        (&rest[2..2 + len], &rest[2 + len..])
    }
    assert_eq!(der[0], 0x30, "a DER SEQUENCE");
    // P-256 signatures are short enough for a one-byte length.
    let body = &der[2..];
    let (r, rest) = integer(body);
    let (s, _) = integer(rest);
    let mut raw = Vec::with_capacity(64);
    for part in [r, s] {
        let trimmed: &[u8] = &part[part.len().saturating_sub(32)..];
        raw.extend(std::iter::repeat_n(0, 32 - trimmed.len()));
        raw.extend_from_slice(trimmed);
    }
    raw
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("temporary paths are UTF-8")
}

/// Runs `openssl args` with `input` on stdin and returns its stdout.
fn openssl(args: &[&str], input: &[u8]) -> Vec<u8> {
    let mut child = Command::new("openssl")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run `openssl` ({e}); auth tests sign tokens with it: apt-get install openssl")
        });
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(input)
        .expect("writing to openssl");
    let output = child.wait_with_output().expect("waiting for openssl");
    assert!(
        output.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64url_matches_rfc_4648_vectors_without_padding() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg"),
            ("fo", "Zm8"),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg"),
            ("fooba", "Zm9vYmE"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64url(plain.as_bytes()), encoded);
        }
        assert_eq!(base64url(&[0xfb, 0xff]), "-_8");
    }

    #[test]
    fn hmac_sha256_matches_rfc_4231_test_case_2() {
        let mac = openssl(
            &[
                "dgst",
                "-sha256",
                "-mac",
                "HMAC",
                "-macopt",
                "hexkey:4a656665",
                "-binary",
            ],
            b"what do ya want for nothing?",
        );
        let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn der_signatures_become_64_raw_bytes() {
        let der = [0x30, 0x08, 0x02, 0x02, 0x00, 0x81, 0x02, 0x02, 0x01, 0x02];
        let raw = ecdsa_der_to_raw(&der);
        assert_eq!(raw.len(), 64);
        assert_eq!(raw[31], 0x81);
        assert_eq!(&raw[62..], &[0x01, 0x02]);
    }
}
