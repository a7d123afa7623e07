//! Checks that the shipped Grafana dashboard (`dashboards/grafana/flotilla.json`) only queries metrics that
//! [`Metrics`] registers, so renaming a metric without the dashboard fails the build's tests.

use std::collections::BTreeSet;

use serde_json::Value;

use super::metrics::Metrics;

const DASHBOARD: &str = include_str!("../../dashboards/grafana/flotilla.json");

/// Every string under a key named `key`, anywhere in the document.
fn strings_under<'a>(value: &'a Value, key: &str, out: &mut Vec<&'a str>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                if k == key {
                    if let Some(s) = v.as_str() {
                        out.push(s);
                    }
                }
                strings_under(v, key, out);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| strings_under(v, key, out)),
        _ => {}
    }
}

/// The `flotilla_*` identifiers in a PromQL expression.
fn flotilla_names(expr: &str) -> Vec<&str> {
    let mut names = Vec::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(pos) = expr[i..].find("flotilla_") {
        let start = i + pos;
        let is_word_start = start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let end = expr[start..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .map_or(expr.len(), |n| start + n);
        if is_word_start {
            names.push(&expr[start..end]);
        }
        i = end;
    }
    names
}

/// A series name as its family: histogram series drop `_bucket`, `_sum` and `_count`.
fn family<'a>(name: &'a str, registered: &BTreeSet<&str>) -> &'a str {
    ["_bucket", "_sum", "_count"]
        .iter()
        .find_map(|suffix| name.strip_suffix(suffix).filter(|base| registered.contains(base)))
        .unwrap_or(name)
}

#[test]
fn dashboard_queries_only_registered_metrics() {
    let dashboard: Value = serde_json::from_str(DASHBOARD).expect("dashboard is valid JSON");
    let metrics = Metrics::new();
    let registered: BTreeSet<&str> = metrics.metric_names().iter().map(String::as_str).collect();

    let mut exprs = Vec::new();
    strings_under(&dashboard, "expr", &mut exprs);
    assert!(
        exprs.len() >= 10,
        "expected a panel per metric group, found {} queries",
        exprs.len()
    );
    let mut queries = exprs.clone();
    strings_under(&dashboard["templating"], "query", &mut queries);

    let mut used = BTreeSet::new();
    for expr in &exprs {
        assert!(
            !flotilla_names(expr).is_empty(),
            "query uses no flotilla metric: {expr}"
        );
    }
    for query in &queries {
        for name in flotilla_names(query) {
            let family = family(name, &registered);
            assert!(
                registered.contains(family),
                "{name} in `{query}` is not a registered metric"
            );
            used.insert(family);
        }
    }
    assert_eq!(used, registered, "every metric has a panel");
}

#[test]
fn dashboard_shape() {
    let dashboard: Value = serde_json::from_str(DASHBOARD).unwrap();
    assert_eq!(dashboard["schemaVersion"], 39);
    let vars = dashboard["templating"]["list"].as_array().unwrap();
    let datasource = vars
        .iter()
        .find(|v| v["name"] == "datasource")
        .expect("a datasource variable");
    assert_eq!(datasource["type"], "datasource");
    assert_eq!(datasource["query"], "prometheus");
    let mut ids = BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        assert!(
            ids.insert(panel["id"].as_u64().unwrap()),
            "duplicate panel id in {panel}"
        );
        if panel["type"] != "row" {
            assert_eq!(panel["datasource"]["uid"], "${datasource}", "{}", panel["title"]);
        }
    }
}

#[test]
fn names_in_expressions() {
    assert_eq!(
        flotilla_names("sum(rate(flotilla_a_count{x=\"flotilla_no\"}[5m])) / xflotilla_b + flotilla_c"),
        vec!["flotilla_a_count", "flotilla_no", "flotilla_c"]
    );
}
