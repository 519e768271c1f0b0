//! `/v1/models`.

use serde::{Deserialize, Serialize};

/// The answer of `GET /v1/models`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelList {
    /// Always `list`.
    pub object: String,
    /// The models, in name order.
    pub data: Vec<ModelCard>,
}

/// One served model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelCard {
    /// The name requests use.
    pub id: String,
    /// Always `model`.
    pub object: String,
    /// Unix seconds when the gateway registered it.
    pub created: u64,
    /// Who serves it.
    pub owned_by: String,
}
