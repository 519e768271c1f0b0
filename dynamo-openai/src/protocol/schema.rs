//! Schemas that the `ToSchema` derive cannot infer from a field's type: strings that always
//! hold one value (`"object": "chat.completion"`), used with `#[schema(schema_with = …)]`.

use utoipa::openapi::schema::{Object, ObjectBuilder, Type};

/// A string that is always `value`.
fn constant(value: &'static str) -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some([value]))
        .build()
}

pub(crate) fn chat_completion() -> Object {
    constant("chat.completion")
}

pub(crate) fn chat_completion_chunk() -> Object {
    constant("chat.completion.chunk")
}

pub(crate) fn text_completion() -> Object {
    constant("text_completion")
}

pub(crate) fn list() -> Object {
    constant("list")
}

pub(crate) fn model() -> Object {
    constant("model")
}

pub(crate) fn function() -> Object {
    constant("function")
}
