//! `GET /v1/responses/{id}/input_items`: a stored response's input items, a page at a time.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, Path, Query, State};

use super::super::Shared;
use super::super::auth::Caller;
use super::super::openapi::ErrorResponse;
use super::store::Stored;
use crate::ApiError;
use crate::protocol::{InputContent, InputItem, InputItemList, InputPart, ListedInputItem, Role};

/// Items to a page without `limit`, as OpenAI's.
const DEFAULT_LIMIT: usize = 20;

/// The largest `limit`, as OpenAI's.
const MAX_LIMIT: usize = 100;

/// List a stored response's input items
///
/// The items of the request's own `input` (a text input is one user message): not those of the
/// earlier responses it continued from, nor its output. Newest first unless `order=asc`, 20 to a
/// page unless `limit` (1 to 100) says otherwise, from the item after the one `after` names. A
/// 404 if the response is not stored, or was stored with another API key.
#[utoipa::path(
    get,
    path = "/v1/responses/{id}/input_items",
    operation_id = "listInputItems",
    tag = "openai",
    params(
        ("id" = String, Path, description = "The response's id (`resp_…`)"),
        ("after" = Option<String>, Query, description = "List the items after this item id"),
        ("limit" = Option<u32>, Query, description = "Items to a page, 1 to 100 (default 20)"),
        ("order" = Option<String>, Query, description = "`desc` (newest first, default) or `asc`"),
    ),
    responses(
        (status = 200, description = "A page of the response's input items", body = InputItemList),
        (status = 400, response = ErrorResponse),
        (status = 404, response = ErrorResponse),
    ),
)]
pub(crate) async fn list(
    State(shared): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<InputItemList>, ApiError> {
    let Query(query) = query.map_err(|refused| ApiError::invalid_request(refused.body_text()))?;
    let paging = Paging::parse(&query)?;
    let stored = shared
        .responses
        .get(caller, &id)
        .await?
        .ok_or_else(|| ApiError::response_not_found(&id))?;
    Ok(Json(paging.page(listed(&stored))?))
}

/// Which page a listing asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Paging {
    /// The id of the item the page starts after.
    after: Option<String>,
    /// Items to the page, 1 to [`MAX_LIMIT`].
    limit: usize,
    /// The last item sent first (`order=desc`, the default).
    newest_first: bool,
}

impl Paging {
    /// The paging of a query's `after`, `limit` and `order`; any other parameter is refused,
    /// naming it.
    fn parse(query: &[(String, String)]) -> Result<Self, ApiError> {
        let mut paging = Paging {
            after: None,
            limit: DEFAULT_LIMIT,
            newest_first: true,
        };
        for (name, value) in query {
            match name.as_str() {
                "after" => paging.after = Some(value.clone()),
                "limit" => {
                    paging.limit = value
                        .parse()
                        .ok()
                        .filter(|limit| (1..=MAX_LIMIT).contains(limit))
                        .ok_or_else(|| {
                            let message = format!("limit must be 1 to {MAX_LIMIT}, not `{value}`");
                            ApiError::invalid_field("limit", message)
                        })?;
                }
                "order" => {
                    paging.newest_first = match value.as_str() {
                        "desc" => true,
                        "asc" => false,
                        other => {
                            let message = format!("order must be `asc` or `desc`, not `{other}`");
                            return Err(ApiError::invalid_field("order", message));
                        }
                    }
                }
                "include" | "include[]" => {
                    let message =
                        "include is not supported: the items have no optional fields here";
                    return Err(ApiError::invalid_field("include", message));
                }
                other => {
                    let message = format!("unknown query parameter `{other}`");
                    return Err(ApiError::invalid_field(other, message));
                }
            }
        }
        Ok(paging)
    }

    /// The page of `items` (in the order they were sent) this paging asks for.
    fn page(&self, mut items: Vec<ListedInputItem>) -> Result<InputItemList, ApiError> {
        if self.newest_first {
            items.reverse();
        }
        let start = match &self.after {
            None => 0,
            Some(after) => {
                let found = items.iter().position(|item| item.id == *after);
                let message = format!("the response has no input item `{after}`");
                1 + found.ok_or_else(|| ApiError::invalid_field("after", message))?
            }
        };
        let mut data = items.split_off(start);
        let has_more = data.len() > self.limit;
        data.truncate(self.limit);
        Ok(InputItemList {
            object: "list".to_owned(),
            first_id: data.first().map(|item| item.id.clone()),
            last_id: data.last().map(|item| item.id.clone()),
            data,
            has_more,
        })
    }
}

/// The request's own input items of `stored`, as they are listed, in the order they were sent.
fn listed(stored: &Stored) -> Vec<ListedInputItem> {
    let id = &stored.response.id;
    let response = id.strip_prefix("resp_").unwrap_or(id);
    let input = stored.conversation.get(stored.input.clone());
    let input = input.unwrap_or_default().iter().enumerate();
    input
        .map(|(place, item)| listed_item(item, response, place))
        .collect()
}

/// `item`, the `place`th of `response`'s input, as it is listed.
fn listed_item(item: &InputItem, response: &str, place: usize) -> ListedInputItem {
    let mut item = item.clone();
    let kind = item.kind.get_or_insert_with(|| "message".to_owned());
    let prefix = match kind.as_str() {
        "function_call" => "fc",
        "function_call_output" => "fco",
        "reasoning" => "rs",
        _ => "msg",
    };
    if let Some(InputContent::Text(text)) = &item.content {
        let kind = match item.role {
            Some(Role::Assistant) => "output_text",
            _ => "input_text",
        };
        let part = InputPart {
            kind: kind.to_owned(),
            text: Some(text.clone()),
        };
        item.content = Some(InputContent::Parts(vec![part]));
    }
    ListedInputItem {
        id: format!("{prefix}_{response}-in{place}"),
        item,
        status: matches!(prefix, "msg" | "fc").then(|| "completed".to_owned()),
        summary: (prefix == "rs").then(Vec::new),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// `count` listed items, in the order they were sent.
    fn items(count: usize) -> Vec<ListedInputItem> {
        let message = InputItem {
            role: Some(Role::User),
            content: Some(InputContent::Text("hi".to_owned())),
            ..InputItem::default()
        };
        (0..count)
            .map(|place| listed_item(&message, "r", place))
            .collect()
    }

    fn query(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect()
    }

    proptest! {
        /// Following `last_id` from page to page lists every item once, in the order asked
        /// for, each page at most `limit` long and `has_more` on every page but the last.
        #[test]
        fn pages_followed_by_their_last_id_list_every_item_once_in_order(
            count in 0..60_usize,
            limit in 1..25_usize,
            newest_first in any::<bool>(),
        ) {
            let sent = items(count);
            let mut expected: Vec<String> = sent.iter().map(|item| item.id.clone()).collect();
            if newest_first {
                expected.reverse();
            }
            let mut paging = Paging { after: None, limit, newest_first };
            let mut seen = Vec::new();
            loop {
                let page = paging.page(sent.clone()).expect("a page");
                prop_assert!(page.data.len() <= limit);
                prop_assert_eq!(page.first_id.as_ref(), page.data.first().map(|item| &item.id));
                seen.extend(page.data.iter().map(|item| item.id.clone()));
                prop_assert_eq!(page.has_more, seen.len() < count);
                if !page.has_more {
                    break;
                }
                prop_assert!(!page.data.is_empty());
                paging.after = page.last_id;
            }
            prop_assert_eq!(seen, expected);
        }
    }

    #[test]
    fn a_text_becomes_a_part_and_each_type_has_its_prefix_and_status() {
        let said = listed_item(
            &InputItem {
                role: Some(Role::Assistant),
                content: Some(InputContent::Text("Paris.".to_owned())),
                ..InputItem::default()
            },
            "abc",
            0,
        );
        let json = serde_json::to_value(&said).expect("serialises");
        assert_eq!(
            json,
            serde_json::json!({
                "id": "msg_abc-in0", "type": "message", "role": "assistant", "status": "completed",
                "content": [{"type": "output_text", "text": "Paris."}],
            })
        );
        for (kind, prefix, status) in [
            ("function_call", "fc", Some("completed")),
            ("function_call_output", "fco", None),
            ("reasoning", "rs", None),
        ] {
            let item = InputItem {
                kind: Some(kind.to_owned()),
                ..InputItem::default()
            };
            let listed = listed_item(&item, "abc", 3);
            assert_eq!(listed.id, format!("{prefix}_abc-in3"));
            assert_eq!(listed.status.as_deref(), status, "{kind}");
            assert_eq!(listed.summary.is_some(), kind == "reasoning");
        }
    }

    #[test]
    fn a_paging_out_of_bounds_or_unknown_is_refused_naming_the_parameter() {
        for (pairs, param) in [
            (query(&[("limit", "0")]), "limit"),
            (query(&[("limit", "101")]), "limit"),
            (query(&[("limit", "ten")]), "limit"),
            (query(&[("order", "newest")]), "order"),
            (
                query(&[("include[]", "message.input_image.image_url")]),
                "include",
            ),
            (query(&[("before", "msg_1")]), "before"),
        ] {
            let refused = Paging::parse(&pairs).expect_err(param);
            assert_eq!(refused.body().error.param.as_deref(), Some(param));
        }
        let paging = Paging::parse(&query(&[("limit", "100"), ("order", "asc")])).expect("valid");
        assert_eq!((paging.limit, paging.newest_first), (100, false));
        let unknown = Paging {
            after: Some("msg_r-in9".to_owned()),
            ..paging
        };
        let refused = unknown.page(items(3)).expect_err("no such item");
        assert_eq!(refused.body().error.param.as_deref(), Some("after"));
    }
}
