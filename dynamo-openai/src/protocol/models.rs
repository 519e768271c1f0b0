//! `/v1/models`.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::schema;

/// The answer of `GET /v1/models`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ModelList {
    /// Always `list`.
    #[schema(schema_with = schema::list)]
    pub object: String,
    /// The models, in name order.
    pub data: Vec<ModelCard>,
}

/// One served model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ModelCard {
    /// The name requests use.
    pub id: String,
    /// Always `model`.
    #[schema(schema_with = schema::model)]
    pub object: String,
    /// Unix seconds when the gateway registered it.
    pub created: u64,
    /// Who serves it.
    pub owned_by: String,
}
