//! A PostgreSQL password set without sending it: the SCRAM-SHA-256 verifier (RFC 5802, 7677) is
//! computed here and only the verifier travels, as `psql`'s `\password` does. The server log,
//! `pg_stat_activity` and the journal see a salted hash, never the password.
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// PostgreSQL's default (`scram_iterations`).
const ITERATIONS: u32 = 4096;

/// `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`, as pg_authid stores it.
pub fn verifier(password: &str, salt: &[u8], iterations: u32) -> String {
    let mut salted = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<Sha256>(password.as_bytes(), salt, iterations, &mut salted);
    let hmac = |key: &[u8], msg: &[u8]| {
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
        m.update(msg);
        m.finalize().into_bytes()
    };
    let client_key = hmac(&salted, b"Client Key");
    let stored_key = Sha256::digest(client_key);
    let server_key = hmac(&salted, b"Server Key");
    let b64 = base64::engine::general_purpose::STANDARD;
    format!("SCRAM-SHA-256${iterations}:{}${}:{}", b64.encode(salt), b64.encode(stored_key), b64.encode(server_key))
}

/// `ALTER ROLE "role" PASSWORD '<verifier>'` with a fresh random salt. (ALTER ROLE takes no
/// bound parameters; the verifier is base64 and `$:` only, and the role is quoted.)
pub fn alter_role_sql(role: &str, password: &str) -> Result<String, String> {
    if role.is_empty() || role.contains('\0') {
        return Err("set_password: give the role's name".into());
    }
    // PostgreSQL normalises a non-ASCII password with SASLprep before hashing; an ASCII one is
    // taken as it is. Refused rather than hashed differently from what the server expects.
    if !password.is_ascii() {
        return Err("set_password: the password must be ASCII (PostgreSQL would SASLprep other text first)".into());
    }
    let salt: [u8; 16] = rand::random();
    let quoted = format!("\"{}\"", role.replace('"', "\"\""));
    Ok(format!("ALTER ROLE {quoted} PASSWORD '{}'", verifier(password, &salt, ITERATIONS)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_verifier_matches_an_independent_computation() {
        // RFC 7677's password and salt; the expected verifier computed independently (Python's
        // hashlib.pbkdf2_hmac and hmac). The integration test logs in with one on a real server.
        let salt = base64::engine::general_purpose::STANDARD.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let v = verifier("pencil", &salt, 4096);
        assert_eq!(
            v,
            "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU="
        );
    }

    #[test]
    fn roles_are_quoted_and_the_password_never_appears() {
        let sql = alter_role_sql("we\"ird", "Hunter2-longer-pass").unwrap();
        assert!(sql.starts_with("ALTER ROLE \"we\"\"ird\" PASSWORD 'SCRAM-SHA-256$4096:"), "{sql}");
        assert!(!sql.contains("Hunter2"));
        assert!(alter_role_sql("r", "pässword").is_err());
    }
}
