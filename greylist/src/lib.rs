//! Moat's triplet greylisting: an embedded store, MySQL shards, a Postfix policy service.
//!
//! Nothing is here yet; issue #4 builds it. See README.md.
