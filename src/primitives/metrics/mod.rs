//! `metrics`: Prometheus' HTTP API (`/api/v1/query`, `/api/v1/query_range`), so a runbook can
//! judge a canary or a scaling decision by numbers. Requests go through the `http` primitive's
//! client (TLS verified, retries on 429/502/503/504, credentials never shown); a PromQL error is
//! an error naming its kind, the query and Prometheus' message.
pub mod analysis;
pub mod lua;

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::{Method, Url};
use serde::Deserialize;

use crate::primitives::http::{self, Body, ClientKey, Expect, HttpError, Request};

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error("PromQL {kind} error in `{query}`: {message}")]
    Query { kind: String, query: String, message: String },
    #[error("{url} did not answer as Prometheus' API does ({status}): {cause}")]
    Answer { url: String, status: String, cause: String },
}

/// A Prometheus server and how to reach it.
#[derive(Debug, Clone)]
pub struct Prometheus {
    pub base: Url,
    /// (name, value, is a secret): Authorization and any others.
    pub headers: Vec<(String, String, bool)>,
    pub timeout: Duration,
    pub client: ClientKey,
}

/// One series of an instant query: its labels and its value at `time` (Unix seconds).
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub labels: BTreeMap<String, String>,
    pub time: f64,
    pub value: f64,
}

/// One series of a range query: its labels and (time, value) points.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub labels: BTreeMap<String, String>,
    pub points: Vec<(f64, f64)>,
}

/// What a query returned, and the warnings Prometheus gave with it (a partial answer from
/// Thanos or Mimir says so there).
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub answer: Answer,
    pub warnings: Vec<String>,
}

/// What a query returned, by Prometheus' result type.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// `vector` (and `scalar`, as one sample without labels).
    Vector(Vec<Sample>),
    /// `matrix`.
    Matrix(Vec<Series>),
    /// `string`.
    Text(f64, String),
}

/// The JSON envelope of every API answer.
#[derive(Deserialize)]
struct Envelope {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default, rename = "errorType")]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    warnings: Vec<String>,
}

#[derive(Deserialize)]
struct Data {
    #[serde(rename = "resultType")]
    result_type: String,
    result: serde_json::Value,
}

#[derive(Deserialize)]
struct RawSample {
    #[serde(default)]
    metric: BTreeMap<String, String>,
    value: (f64, String),
}

#[derive(Deserialize)]
struct RawSeries {
    #[serde(default)]
    metric: BTreeMap<String, String>,
    values: Vec<(f64, String)>,
}

/// A sample value as Prometheus writes it: a decimal, `NaN`, `+Inf` or `-Inf`.
pub fn number(text: &str) -> Result<f64, String> {
    match text {
        "NaN" => Ok(f64::NAN),
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        t => t.parse().map_err(|_| format!("'{t}' is not a sample value")),
    }
}

impl Prometheus {
    /// An instant query, evaluated now or at `time` (Unix seconds).
    pub async fn query(&self, query: &str, time: Option<f64>) -> Result<Reply, MetricsError> {
        if time.is_some_and(|t| !t.is_finite()) {
            return Err(MetricsError::Usage("`at` must be a Unix time in seconds".into()));
        }
        let mut params = vec![("query".to_string(), query.to_string())];
        if let Some(t) = time {
            params.push(("time".into(), format_time(t)));
        }
        self.call("api/v1/query", query, params).await
    }

    /// A range query from `start` to `end` (Unix seconds) every `step`.
    pub async fn query_range(&self, query: &str, start: f64, end: f64, step: Duration) -> Result<Reply, MetricsError> {
        if !start.is_finite() || !end.is_finite() {
            return Err(MetricsError::Usage("a range's start and stop must be Unix times in seconds".into()));
        }
        if end < start {
            return Err(MetricsError::Usage("a range query's end is before its start".into()));
        }
        if step.is_zero() {
            return Err(MetricsError::Usage("a range query's step must be more than zero".into()));
        }
        let points = (end - start) / step.as_secs_f64();
        if points > 11_000.0 {
            // Prometheus' own limit; said here with the numbers that broke it.
            return Err(MetricsError::Usage(format!(
                "a range of {:.0}s every {}s is {points:.0} points; Prometheus answers at most 11,000: make the step longer",
                end - start,
                step.as_secs_f64()
            )));
        }
        let params = vec![
            ("query".to_string(), query.to_string()),
            ("start".into(), format_time(start)),
            ("end".into(), format_time(end)),
            ("step".into(), format!("{}", step.as_secs_f64())),
        ];
        self.call("api/v1/query_range", query, params).await
    }

    async fn call(&self, path: &str, query: &str, params: Vec<(String, String)>) -> Result<Reply, MetricsError> {
        let url = self.base.join(path).map_err(|e| MetricsError::Usage(format!("{}: {e}", self.base)))?;
        // A GET: idempotent, so a transport error is retried by `send` whatever happened, and a
        // redirect (http to https) keeps the query. Statuses are all accepted there (an error's
        // JSON says more than its status) and the overloaded ones retried here.
        let req = Request {
            method: Method::GET,
            url: url.clone(),
            headers: self.headers.clone(),
            query: params,
            body: Body::None,
            timeout: self.timeout,
            retries: 2,
            retry_delay: Duration::from_millis(500),
            expect: Expect::Any,
            client: self.client.clone(),
        };
        let mut delay = Duration::from_millis(500);
        let resp = loop {
            let resp = http::send(&req, |_| {}).await?;
            if matches!(resp.status, 429 | 502 | 503 | 504) && delay < Duration::from_secs(2) {
                tokio::time::sleep(delay).await;
                delay *= 2;
                continue;
            }
            break resp;
        };
        parse(&resp.body, resp.status).map_err(|cause| match cause {
            Parsed::Query(kind, message) => MetricsError::Query { kind, query: short(query), message },
            Parsed::Bad(cause) => MetricsError::Answer {
                url: http::shown_url(&url),
                status: http::status_line(resp.status),
                cause: format!("{cause}; the body starts: {}", http::body_start(&resp.body)),
            },
        })
    }
}

/// A query as shown in an error: on one line, at most 200 characters.
fn short(query: &str) -> String {
    let one: String = query.split_whitespace().collect::<Vec<_>>().join(" ");
    match one.char_indices().nth(200) {
        Some((i, _)) => format!("{}...", &one[..i]),
        None => one,
    }
}

fn format_time(t: f64) -> String {
    format!("{t:.3}")
}

enum Parsed {
    /// Prometheus said no: (errorType, error).
    Query(String, String),
    /// Not an answer of the API at all.
    Bad(String),
}

fn parse(body: &[u8], status: u16) -> Result<Reply, Parsed> {
    let env: Envelope = serde_json::from_slice(body).map_err(|e| Parsed::Bad(format!("not its JSON ({e})")))?;
    if env.status != "success" {
        return Err(Parsed::Query(
            env.error_type.unwrap_or_else(|| "unknown".into()),
            env.error.unwrap_or_else(|| format!("status {}", http::status_line(status))),
        ));
    }
    let warnings = env.warnings;
    let data = env.data.ok_or_else(|| Parsed::Bad("a success without data".into()))?;
    let bad = |e: String| Parsed::Bad(format!("a {} result that does not read: {e}", data.result_type));
    let answer = match data.result_type.as_str() {
        "vector" => {
            let raw: Vec<RawSample> = serde_json::from_value(data.result.clone()).map_err(|e| bad(e.to_string()))?;
            let mut out = Vec::with_capacity(raw.len());
            for s in raw {
                out.push(Sample { labels: s.metric, time: s.value.0, value: number(&s.value.1).map_err(bad)? });
            }
            Answer::Vector(out)
        }
        "scalar" => {
            let (time, v): (f64, String) =
                serde_json::from_value(data.result.clone()).map_err(|e| bad(e.to_string()))?;
            Answer::Vector(vec![Sample { labels: BTreeMap::new(), time, value: number(&v).map_err(bad)? }])
        }
        "matrix" => {
            let raw: Vec<RawSeries> = serde_json::from_value(data.result.clone()).map_err(|e| bad(e.to_string()))?;
            let mut out = Vec::with_capacity(raw.len());
            for s in raw {
                let points = s
                    .values
                    .iter()
                    .map(|(t, v)| number(v).map(|v| (*t, v)))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(bad)?;
                out.push(Series { labels: s.metric, points });
            }
            Answer::Matrix(out)
        }
        "string" => {
            let (time, v): (f64, String) =
                serde_json::from_value(data.result.clone()).map_err(|e| bad(e.to_string()))?;
            Answer::Text(time, v)
        }
        other => return Err(Parsed::Bad(format!("an unknown result type '{other}'"))),
    };
    Ok(Reply { answer, warnings })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_result_type_and_special_value_reads() {
        let v = br#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"job":"api"},"value":[1700000000.5,"0.05"]},{"metric":{},"value":[1700000000.5,"NaN"]},
            {"metric":{"le":"+Inf"},"value":[1,"+Inf"]}]}}"#;
        let Answer::Vector(s) = parse(v, 200).ok().unwrap().answer else { panic!("not a vector") };
        assert_eq!(s[0].labels.get("job").map(String::as_str), Some("api"));
        assert_eq!((s[0].time, s[0].value), (1_700_000_000.5, 0.05));
        assert!(s[1].value.is_nan());
        assert_eq!(s[2].value, f64::INFINITY);
        let m = br#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"a":"b"},"values":[[1,"1"],[2,"-Inf"]]}]}}"#;
        assert_eq!(
            parse(m, 200).ok().unwrap().answer,
            Answer::Matrix(vec![Series {
                labels: [("a".to_string(), "b".to_string())].into(),
                points: vec![(1.0, 1.0), (2.0, f64::NEG_INFINITY)]
            }])
        );
        let sc = br#"{"status":"success","data":{"resultType":"scalar","result":[5,"2"]}}"#;
        assert!(
            matches!(parse(sc, 200).ok().unwrap().answer, Answer::Vector(v) if v[0].value == 2.0 && v[0].labels.is_empty())
        );
    }

    #[test]
    fn a_promql_error_and_a_page_that_is_not_the_api_are_told_apart() {
        let e = br#"{"status":"error","errorType":"bad_data","error":"1:5: parse error: unexpected"}"#;
        assert!(matches!(parse(e, 400), Err(Parsed::Query(k, m)) if k == "bad_data" && m.contains("parse error")));
        assert!(matches!(parse(b"<html>login</html>", 200), Err(Parsed::Bad(_))));
        let odd = br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"lots"]}]}}"#;
        assert!(matches!(parse(odd, 200), Err(Parsed::Bad(c)) if c.contains("'lots'")));
        let warned = br#"{"status":"success","warnings":["partial response: store down"],"data":{"resultType":"vector","result":[]}}"#;
        assert_eq!(parse(warned, 200).ok().unwrap().warnings, vec!["partial response: store down".to_string()]);
    }
}
