//! What `db`'s fake (fake.lua) needs of Rust: a connection's URL as the fakes match it (its
//! password left out, so it can be recorded and shown), and a real SQLite database file in the
//! test's world for a test that prefers one to canned rows.
use mlua::{Lua, Table, Value};

/// A database URL without its password: `postgres://app@db:5432/app`. The userinfo ends at the
/// last `@` (a password may hold `/`, `?` or `@`); query parameters naming a password and a
/// `key=value` connection string's password go too.
pub fn without_password(url: &str) -> String {
    let hidden = |kv: &str| {
        kv.split_once('=').is_some_and(|(k, _)| {
            let k = k.trim().to_ascii_lowercase();
            k.contains("pass") || k.contains("pwd") || k.contains("secret") || k.contains("token")
        })
    };
    let Some((scheme, rest)) = url.split_once("://") else {
        // A key=value connection string.
        return url.split_whitespace().filter(|kv| !hidden(kv)).collect::<Vec<_>>().join(" ");
    };
    let rest = match rest.rfind('@') {
        Some(at) => {
            let user = rest[..at].split(':').next().unwrap_or_default();
            format!("{user}@{}", &rest[at + 1..])
        }
        None => rest.to_string(),
    };
    let shown = match rest.split_once('?') {
        Some((base, query)) => {
            let kept: Vec<&str> = query.split('&').filter(|kv| !hidden(kv)).collect();
            if kept.is_empty() {
                base.to_string()
            } else {
                format!("{base}?{}", kept.join("&"))
            }
        }
        None => rest,
    };
    format!("{scheme}://{shown}")
}

pub fn support(lua: &Lua, world: &std::path::Path) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    t.set(
        "target",
        lua.create_function(|_, v: Value| {
            let (text, _) = crate::primitives::text_and_secrecy("db", "url", v)?;
            Ok(without_password(&text))
        })?,
    )?;
    let world = world.to_path_buf();
    t.set(
        "sqlite_url",
        lua.create_function(move |_, n: i64| {
            std::fs::create_dir_all(&world).map_err(|e| crate::primitives::error("db", e))?;
            Ok(format!("sqlite://{}", world.join(format!("db-{n}.sqlite")).display()))
        })?,
    )?;
    Ok(t)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_url_loses_its_password_and_keeps_the_rest() {
        assert_eq!(super::without_password("postgres://app:s3cr@t@db:5432/app"), "postgres://app@db:5432/app");
        assert_eq!(super::without_password("postgres://db/app"), "postgres://db/app");
        assert_eq!(super::without_password("sqlite::memory:"), "sqlite::memory:");
        assert_eq!(super::without_password("postgres://app:pa/ss@db/app"), "postgres://app@db/app");
        assert_eq!(
            super::without_password("postgres://db/app?user=app&password=hunter2&sslmode=require"),
            "postgres://db/app?user=app&sslmode=require"
        );
        assert_eq!(super::without_password("host=db user=app password=hunter2"), "host=db user=app");
    }
}
