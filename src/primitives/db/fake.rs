//! What `db`'s fake (fake.lua) needs of Rust: a connection's URL as the fakes match it (its
//! password left out, so it can be recorded and shown), and a real SQLite database file in the
//! test's world for a test that prefers one to canned rows.
use mlua::{Lua, Table, Value};

/// A database URL without its password: `postgres://app@db:5432/app`.
pub fn without_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}@{host}{path}")
        }
        None => url.to_string(),
    }
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
    }
}
