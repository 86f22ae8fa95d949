//! Rebuilds the server when a migration is added or changed: `sqlx::migrate!`
//! embeds `migrations/postgres/` and `migrations/sqlite/` at compile time,
//! and cargo does not otherwise notice a new file there.

fn main() {
    println!("cargo:rerun-if-changed=migrations/postgres");
    println!("cargo:rerun-if-changed=migrations/sqlite");
}
