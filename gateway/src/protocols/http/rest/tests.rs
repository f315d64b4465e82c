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

/// The store-free input check (what the fuzz target `rest_request` drives) reads each
/// endpoint's path, query and body as its handler does: valid input passes, the rest is a 400.
#[test]
fn the_input_check_reads_bodies_queries_and_paths_like_the_handlers() {
    use super::{Endpoint as E, RestCall, check_input};
    let call = |endpoint, param: &str, query: Option<&str>, body: &str| RestCall {
        endpoint,
        params: ["org", "user", "role", "template", "device", "key"]
            .iter()
            .map(|n| ((*n).to_owned(), param.to_owned()))
            .collect(),
        query: query.map(str::to_owned),
        bearer: None,
        body: body.as_bytes().to_vec(),
        peer: None,
    };
    let passes = [
        call(E::CreateOrg, "", None, r#"{"parent":1,"name":"a"}"#),
        call(E::ListDevices, "", Some("org=2&subtree=true&limit=5"), ""),
        call(
            E::CreateRole,
            "2",
            None,
            r#"{"name":"r","permissions":["audit_log.view"]}"#,
        ),
        call(E::TransferDevice, "4", None, r#"{"owner":null}"#),
        call(E::ReadAudit, "", Some("format=jsonl"), ""),
        call(E::GetTemplate, "TMPL1", None, ""),
        call(E::Me, "", None, ""),
    ];
    for c in passes {
        assert_eq!(check_input(&c), Ok(()), "{:?}", c.endpoint);
    }
    let refused = [
        call(E::CreateOrg, "", None, r#"{"parent":1,"name":"a","x":1}"#),
        call(E::CreateOrg, "", None, ""),
        call(E::Login, "", None, r#"{"email":"#),
        call(E::ListDevices, "", Some("org=x"), ""),
        call(E::ListUsers, "2", Some("bogus=1"), ""),
        call(
            E::CreateRole,
            "2",
            None,
            r#"{"name":"r","permissions":["no.such"]}"#,
        ),
        call(E::UpdateUser, "7", None, r#"{"status":"invited"}"#),
        call(E::ReadAudit, "", Some("format=xml"), ""),
        call(E::GetDevice, "-1", None, ""),
        call(E::GetTemplate, "nope", None, ""),
        call(E::UpdateTemplate, "TMPL1", None, r#"{"id":"TMPL2"}"#),
    ];
    for c in refused {
        let error = check_input(&c).expect_err("refused");
        assert_eq!(error.status, 400, "{:?}: {}", c.endpoint, error.message);
    }
}
