//! JSON Web Tokens for auth tests, signed by the `openssl` command.
//!
//! Tests need tokens herald must accept (HS256, RS256, ES256) and tokens it
//! must refuse (expired, not yet valid, wrong key, `alg: none`, another
//! algorithm's header over the same signature). Signing with the `openssl`
//! command rather than a JWT library keeps the test side independent of the
//! crate herald verifies with, and gives real RSA and EC keys generated
//! fresh for each test. The encoding around the signature (base64url, the
//! DER-to-raw form of ECDSA signatures JWS uses) is short and done here, as
//! is the export of a public key as a JWK (RFC 7517/7518) for an identity
//! provider's key set ([`crate::JwksServer`]).

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

    /// A token whose header names the key that signed it, `{"alg": <alg>,
    /// "typ": "JWT", "kid": <kid>}`, as an identity provider's tokens do:
    /// the verifier picks the key with that `kid` from the provider's JWKS.
    ///
    /// # Panics
    ///
    /// When `openssl` fails.
    pub fn sign_with_kid(&self, kid: &str, claims: &Value) -> String {
        self.sign_with_header(&json!({"alg": self.alg, "typ": "JWT", "kid": kid}), claims)
    }

    /// The public key as a JWK with key id `kid`, as an identity provider
    /// publishes it in its JWKS: `{"kty": "RSA", "kid", "use": "sig",
    /// "alg": "RS256", "n", "e"}` or `{"kty": "EC", "crv": "P-256", "kid",
    /// "use": "sig", "alg": "ES256", "x", "y"}`, numbers in unpadded
    /// base64url (RFC 7518 §6).
    ///
    /// The numbers are read from the key's DER form, written by `openssl`,
    /// so the JWK is exactly the PEM key a verifier would otherwise load.
    ///
    /// # Panics
    ///
    /// For an HS256 signer (a shared secret is never published), or when
    /// `openssl` fails.
    pub fn jwk(&self, kid: &str) -> Value {
        let Key::Pair { public, .. } = &self.key else {
            panic!("an HS256 secret has no public key to publish as a JWK");
        };
        let der = openssl(
            &["pkey", "-pubin", "-in", path_str(public), "-outform", "DER"],
            &[],
        );
        let key = subject_public_key(&der);
        match self.alg {
            "RS256" => {
                // RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER }
                let (tag, sequence, _) = der_element(key);
                assert_eq!(tag, 0x30, "an RSAPublicKey SEQUENCE");
                let (n, rest) = der_unsigned_integer(sequence);
                let (e, _) = der_unsigned_integer(rest);
                json!({
                    "kty": "RSA",
                    "kid": kid,
                    "use": "sig",
                    "alg": "RS256",
                    "n": base64url(n),
                    "e": base64url(e),
                })
            }
            "ES256" => {
                // An uncompressed point: 0x04 || x || y, 32 bytes each.
                assert!(
                    key.len() == 65 && key[0] == 0x04,
                    "an uncompressed P-256 point, got {} bytes",
                    key.len()
                );
                json!({
                    "kty": "EC",
                    "crv": "P-256",
                    "kid": kid,
                    "use": "sig",
                    "alg": "ES256",
                    "x": base64url(&key[1..33]),
                    "y": base64url(&key[33..]),
                })
            }
            other => unreachable!("key pairs are RS256 or ES256, not {other}"),
        }
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

/// The key bytes of a DER `SubjectPublicKeyInfo` (RFC 5280 §4.1):
/// `SEQUENCE { AlgorithmIdentifier, BIT STRING }`, the BIT STRING's content
/// without its unused-bits byte. For RSA that is a DER `RSAPublicKey`, for
/// EC the encoded point.
fn subject_public_key(der: &[u8]) -> &[u8] {
    let (tag, info, _) = der_element(der);
    assert_eq!(tag, 0x30, "a SubjectPublicKeyInfo SEQUENCE");
    let (tag, _algorithm, rest) = der_element(info);
    assert_eq!(tag, 0x30, "an AlgorithmIdentifier SEQUENCE");
    let (tag, bits, _) = der_element(rest);
    assert_eq!(tag, 0x03, "a BIT STRING");
    assert_eq!(bits.first(), Some(&0), "a key is whole bytes");
    &bits[1..]
}

/// An INTEGER's magnitude, without the zero byte DER puts before a high
/// bit (JWK numbers are unsigned, RFC 7518 §2 "Base64urlUInt"), and the
/// bytes after it.
fn der_unsigned_integer(der: &[u8]) -> (&[u8], &[u8]) {
    let (tag, mut value, rest) = der_element(der);
    assert_eq!(tag, 0x02, "a DER INTEGER");
    while value.len() > 1 && value[0] == 0 {
        value = &value[1..];
    }
    (value, rest)
}

/// One DER element: its tag, its content and the bytes after it. Lengths
/// over 127 use the long form (a 2048-bit modulus needs it).
fn der_element(der: &[u8]) -> (u8, &[u8], &[u8]) {
    let tag = der[0];
    let (len, header) = match der[1] {
        short @ 0..=0x7f => (usize::from(short), 2),
        long => {
            let octets = usize::from(long & 0x7f);
            let len = der[2..2 + octets]
                .iter()
                .fold(0usize, |len, &b| (len << 8) | usize::from(b));
            (len, 2 + octets)
        }
    };
    (tag, &der[header..header + len], &der[header + len..])
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

    /// `openssl`'s hex dump (`Modulus=9EF3…`, or `04:bf:58:…` lines) as
    /// bytes.
    fn hex_bytes(text: &str) -> Vec<u8> {
        let digits: Vec<u8> = text
            .bytes()
            .filter(u8::is_ascii_hexdigit)
            .map(|b| char::from(b).to_digit(16).expect("a hex digit") as u8)
            .collect();
        digits
            .chunks(2)
            .map(|pair| pair[0] << 4 | pair[1])
            .collect()
    }

    fn public_pem(signer: &TokenSigner) -> &str {
        path_str(signer.public_key_file().expect("a key pair"))
    }

    #[test]
    fn an_rsa_jwk_holds_the_modulus_openssl_reports_and_exponent_65537() {
        let signer = TokenSigner::rs256();
        let jwk = signer.jwk("rsa-1");
        let modulus = openssl(
            &[
                "rsa",
                "-pubin",
                "-in",
                public_pem(&signer),
                "-modulus",
                "-noout",
            ],
            &[],
        );
        let modulus = String::from_utf8(modulus).expect("ASCII");
        let n = hex_bytes(modulus.trim().trim_start_matches("Modulus="));
        assert_eq!(n.len(), 256, "a 2048-bit modulus");
        assert!(n[0] & 0x80 != 0, "no leading zero byte in {modulus}");
        assert_eq!(
            jwk,
            json!({
                "kty": "RSA",
                "kid": "rsa-1",
                "use": "sig",
                "alg": "RS256",
                "n": base64url(&n),
                "e": "AQAB",
            })
        );
    }

    #[test]
    fn an_ec_jwk_holds_the_point_openssl_reports_as_two_32_byte_coordinates() {
        let signer = TokenSigner::es256();
        let jwk = signer.jwk("ec-1");
        let text = openssl(
            &[
                "pkey",
                "-pubin",
                "-in",
                public_pem(&signer),
                "-text",
                "-noout",
            ],
            &[],
        );
        let text = String::from_utf8(text).expect("ASCII");
        let point: String = text
            .lines()
            .skip_while(|line| !line.starts_with("pub:"))
            .skip(1)
            .take_while(|line| line.starts_with(' '))
            .collect();
        let point = hex_bytes(&point);
        assert_eq!((point.len(), point[0]), (65, 0x04), "{text}");
        assert_eq!(
            jwk,
            json!({
                "kty": "EC",
                "crv": "P-256",
                "kid": "ec-1",
                "use": "sig",
                "alg": "ES256",
                "x": base64url(&point[1..33]),
                "y": base64url(&point[33..]),
            })
        );
        // 32 bytes are 43 unpadded base64url characters.
        assert_eq!(jwk["x"].as_str().map(str::len), Some(43));
        assert_eq!(jwk["y"].as_str().map(str::len), Some(43));
    }

    #[test]
    #[should_panic(expected = "no public key")]
    fn an_hs256_secret_is_never_a_jwk() {
        TokenSigner::hs256("secret").jwk("k");
    }

    #[test]
    fn a_kid_token_names_its_key_and_verifies_with_it() {
        let signer = TokenSigner::rs256();
        let claims = json!({"sub": "42"});
        let token = signer.sign_with_kid("rsa-2", &claims);
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(
            parts[0],
            base64url(
                json!({"alg": "RS256", "typ": "JWT", "kid": "rsa-2"})
                    .to_string()
                    .as_bytes()
            )
        );
        assert_eq!(parts[1], base64url(claims.to_string().as_bytes()));
        // The signature verifies with the public key (openssl writes
        // PKCS#1 v1.5, what RS256 is).
        let dir = tempfile::tempdir().expect("a temporary directory");
        let signature = dir.path().join("signature");
        std::fs::write(&signature, base64url_decode(parts[2])).expect("writing");
        let verified = openssl(
            &[
                "dgst",
                "-sha256",
                "-verify",
                public_pem(&signer),
                "-signature",
                path_str(&signature),
            ],
            format!("{}.{}", parts[0], parts[1]).as_bytes(),
        );
        assert_eq!(String::from_utf8_lossy(&verified).trim(), "Verified OK");
    }

    fn base64url_decode(text: &str) -> Vec<u8> {
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let sextets: Vec<u32> = text
            .bytes()
            .map(|b| ALPHABET.iter().position(|&a| a == b).expect("base64url") as u32)
            .collect();
        let mut out = Vec::new();
        for chunk in sextets.chunks(4) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, &s)| n | (s << (18 - 6 * i)));
            for i in 0..chunk.len() - 1 {
                out.push((n >> (16 - 8 * i)) as u8);
            }
        }
        out
    }

    #[test]
    fn der_lengths_in_short_and_long_form() {
        assert_eq!(
            der_element(&[0x02, 0x01, 0x05, 0xff]),
            (0x02, &[0x05][..], &[0xff][..])
        );
        let mut long = vec![0x04, 0x82, 0x01, 0x00];
        long.extend(std::iter::repeat_n(7, 256));
        long.push(9);
        let (tag, content, rest) = der_element(&long);
        assert_eq!((tag, content.len(), rest), (0x04, 256, &[9][..]));
        assert_eq!(
            der_unsigned_integer(&[0x02, 0x02, 0x00, 0x81]),
            (&[0x81][..], &[][..])
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
