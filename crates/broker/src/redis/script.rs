//! herald's Lua scripts, invoked by digest (`EVALSHA`) and loaded on a
//! connection only when Redis answers `NOSCRIPT` (after a restart, a
//! failover, or on a node that never saw them).

use std::sync::LazyLock;

/// A script and its SHA1 digest.
#[derive(Debug)]
pub(crate) struct LuaScript {
    code: &'static str,
    digest: String,
}

impl LuaScript {
    fn new(code: &'static str) -> Self {
        Self {
            code,
            digest: redis::Script::new(code).get_hash().to_owned(),
        }
    }

    /// The digest `EVALSHA` names.
    pub(crate) fn digest(&self) -> &str {
        &self.digest
    }

    /// `SCRIPT LOAD`, for after a `NOSCRIPT` answer.
    pub(crate) fn load_cmd(&self) -> redis::Cmd {
        let mut cmd = redis::cmd("SCRIPT");
        cmd.arg("LOAD").arg(self.code);
        cmd
    }
}

/// Stores and publishes events (`publish.lua`).
pub(crate) static PUBLISH: LazyLock<LuaScript> =
    LazyLock::new(|| LuaScript::new(include_str!("publish.lua")));

/// Reads history windows and events (`read.lua`).
pub(crate) static READ: LazyLock<LuaScript> =
    LazyLock::new(|| LuaScript::new(include_str!("read.lua")));
