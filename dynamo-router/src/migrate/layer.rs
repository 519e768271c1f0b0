//! [`MigrateLayer`]: puts [`Migrate`] in a tower stack.

use tower::Layer;

use super::{Migrate, MigrationConfig};

/// A tower [`Layer`] that wraps an engine in [`Migrate`].
#[derive(Debug, Clone, Copy, Default)]
pub struct MigrateLayer {
    config: MigrationConfig,
}

impl MigrateLayer {
    /// Migrate requests as `config` says.
    pub fn new(config: MigrationConfig) -> Self {
        MigrateLayer { config }
    }
}

impl<S> Layer<S> for MigrateLayer {
    type Service = Migrate<S>;

    fn layer(&self, inner: S) -> Migrate<S> {
        Migrate::new(inner, self.config)
    }
}
