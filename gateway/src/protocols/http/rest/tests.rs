//! Tests of the REST layer without a store: the route table and the OpenAPI file agree, errors
//! have Blynk's shape, and the HTTP session hands a call to a worker and queues what follows.

use super::json::ApiError;
use crate::protocols::http::routes::{API_PREFIX, REST_ROUTES};
use std::collections::BTreeSet;

/// The OpenAPI file describes exactly the routes the router serves: every (method, path) of
/// the table is in the spec and nothing else is.
#[test]
fn the_openapi_file_and_the_router_agree() {
    let spec: serde_json::Value = serde_json::from_str(super::auth::OPENAPI).expect("valid JSON");
    assert_eq!(spec["openapi"], "3.1.0");
    let mut in_spec = BTreeSet::new();
    for (path, item) in spec["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("a path item").keys() {
            in_spec.insert((method.to_uppercase(), path.clone()));
        }
    }
    let served: BTreeSet<(String, String)> = REST_ROUTES
        .iter()
        .map(|(method, path, _)| (method.as_str().to_owned(), format!("{API_PREFIX}{path}")))
        .collect();
    let missing: Vec<_> = served.difference(&in_spec).collect();
    let extra: Vec<_> = in_spec.difference(&served).collect();
    assert!(
        missing.is_empty(),
        "served but not in the spec: {missing:?}"
    );
    assert!(extra.is_empty(), "in the spec but not served: {extra:?}");
}

#[test]
fn errors_have_blynks_shape() {
    let response = ApiError::new(400, "Invalid token.").response();
    assert_eq!(response.status(), 400);
    assert_eq!(response.header("content-type"), Some("application/json"));
    let unauthorized = ApiError::new(401, "No.").response();
    assert_eq!(unauthorized.header("www-authenticate"), Some("Bearer"));
    assert_eq!(
        super::sentence("not permitted: needs users.view"),
        "Not permitted: needs users.view."
    );
}
