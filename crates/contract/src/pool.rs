//! Where the unlocked data pool is mounted, and where `infra.yml` lies on
//! it (until the pool pointer on the persist partition says otherwise).

/// Mount point of the data pool's file system.
pub const POOL_DIR: &str = "/var/lib/anklume/pool";
/// `infra.yml` on the pool, relative to [`POOL_DIR`] (in the `anklume`
/// subvolume or dataset).
pub const INFRA_ON_POOL: &str = "anklume/infra.yml";
