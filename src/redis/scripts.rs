//! The script registry: one `.lua` file per script under `src/lua/`, each
//! compiled in with `include_str!` after the shared `prelude.lua` (time
//! helpers) and invoked as EVALSHA. `redis::Script`
//! loads the script and retries once when Redis answers NOSCRIPT (after a
//! restart, failover or `SCRIPT FLUSH`), on whichever node the call went to.
//! Each script also has a variant for sharded pub/sub, which publishes with
//! `SPUBLISH` (the prelude's `PUBLISH` constant).

use std::sync::LazyLock;

use redis::Script;

/// The helpers every script starts with (`src/lua/prelude.lua`).
pub const PRELUDE: &str = include_str!("../lua/prelude.lua");

const CLASSIC: &str = "local PUBLISH = 'PUBLISH'";
const SHARDED: &str = "local PUBLISH = 'SPUBLISH'";

/// A named script; the name labels metrics and errors.
pub struct NamedScript {
    pub name: &'static str,
    pub source: &'static str,
    script: LazyLock<Script>,
    sharded: LazyLock<Script>,
}

impl NamedScript {
    pub fn script(&self) -> &Script {
        &self.script
    }

    /// The variant for the connection's pub/sub: `sharded` publishes with
    /// SPUBLISH.
    pub fn variant(&self, sharded: bool) -> &Script {
        if sharded { &self.sharded } else { &self.script }
    }

    pub fn sha(&self) -> String {
        self.script.get_hash().to_owned()
    }
}

macro_rules! scripts {
    ($($ident:ident => $file:literal),* $(,)?) => {
        $(
            #[doc = concat!("`src/lua/", $file, "`")]
            pub static $ident: NamedScript = NamedScript {
                name: $file,
                source: concat!(include_str!("../lua/prelude.lua"), include_str!(concat!("../lua/", $file))),
                script: LazyLock::new(|| {
                    Script::new(concat!(include_str!("../lua/prelude.lua"), include_str!(concat!("../lua/", $file))))
                }),
                sharded: LazyLock::new(|| {
                    Script::new(
                        &concat!(include_str!("../lua/prelude.lua"), include_str!(concat!("../lua/", $file)))
                            .replacen(CLASSIC, SHARDED, 1),
                    )
                }),
            };
        )*
        /// Every script, for loading at start-up and for tests.
        pub static ALL: &[&NamedScript] = &[$(&$ident),*];
    };
}

scripts! {
    PROBE => "probe.lua",
    LEASE_GRANT => "lease_grant.lua",
    LEASE_INFO => "lease_info.lua",
    LEASE_ATTACH => "lease_attach.lua",
    LEASE_REVOKE => "lease_revoke.lua",
    LEASE_QUOTA => "lease_quota.lua",
    RENEW => "renew.lua",
    ACQUIRE => "acquire.lua",
    RELEASE => "release.lua",
    LOCK_END => "lock_end.lua",
    WAITER => "waiter.lua",
    SEM_ACQUIRE => "sem_acquire.lua",
    SEM_RELEASE => "sem_release.lua",
    SEM_RESIZE => "sem_resize.lua",
    SEM_DESCRIBE => "sem_describe.lua",
    SEM_RENEW => "sem_renew.lua",
    SEM_LEAVE => "sem_leave.lua",
    EL_LEADER => "el_leader.lua",
    EL_PROCLAIM => "el_proclaim.lua",
    DESCRIBE => "describe.lua",
    FENCE_RAISE => "fence_raise.lua",
    RATELIMIT => "ratelimit.lua",
    SLOTS => "slots.lua",
    LB_CREATE => "lb_create.lua",
    LB_DELETE => "lb_delete.lua",
    LB_SUBMIT => "lb_submit.lua",
    LB_REMOVE => "lb_remove.lua",
    LB_RANKS => "lb_ranks.lua",
    LB_TOP => "lb_top.lua",
    LB_AROUND => "lb_around.lua",
    PS_PUBLISH => "ps_publish.lua",
    PS_HISTORY => "ps_history.lua",
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sharded_variant_differs_only_in_its_publish_command() {
        assert_eq!(PRELUDE.matches(CLASSIC).count(), 1, "the prelude defines PUBLISH once");
        for script in ALL {
            assert!(!script.source[PRELUDE.len()..].contains("'PUBLISH'"), "{} publishes via PUBLISH", script.name);
        }
        assert_ne!(PS_PUBLISH.variant(true).get_hash(), PS_PUBLISH.variant(false).get_hash());
        assert_eq!(PS_PUBLISH.variant(false).get_hash(), PS_PUBLISH.sha());
    }
}
