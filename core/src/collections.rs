//! The core's hash maps. Their hasher has a fixed seed: the order in which
//! a map is iterated depends only on what was put in it, so a node's
//! outputs depend only on its inputs and a seeded simulation of many
//! nodes replays bit for bit (hashbrown's default seeds each map from
//! process addresses and the clock). A fixed seed gives no protection
//! against keys chosen to collide; every map here is bounded by a limit
//! of the node's config, which keeps such an attack to slower lookups in
//! a small map.

/// The hasher of every map in the core.
pub(crate) type Hasher = foldhash::fast::FixedState;
/// A hash map with [`Hasher`].
pub(crate) type HashMap<K, V> = hashbrown::HashMap<K, V, Hasher>;
/// A hash set with [`Hasher`].
pub(crate) type HashSet<T> = hashbrown::HashSet<T, Hasher>;
