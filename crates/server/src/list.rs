//! ListOptimizationJobs and ListInferenceRecommendationsJobs: the request's filters and
//! sort as a store query, and the NextToken that carries a listing from one page to the
//! next.
//!
//! The token is keyset pagination plus a snapshot: it names the last job returned
//! (its sort key and id) and the highest job id that existed when the first page was
//! read. Later pages continue strictly after that job and ignore jobs created since,
//! so a listing neither repeats nor skips a job however many are created or deleted
//! meanwhile. (Sorting by Status is the exception AWS shares: a job whose status
//! changes between pages moves in the order.) The token also records a digest of the
//! filters and sort, and is refused with a different request.

use crate::store::{JobKind, JobSummary, ListQuery, SortKey, SortPosition};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use temper_api::recommendation::{
    ListInferenceRecommendationsJobsRequest, ListInferenceRecommendationsJobsSortBy,
};
use temper_api::{ApiError, ListOptimizationJobsRequest, ListOptimizationJobsSortBy, SortOrder};

/// MaxResults when the request gives none (the service model's documented default).
pub const DEFAULT_MAX_RESULTS: usize = 50;

#[derive(Debug, Serialize, Deserialize)]
struct Token {
    /// Digest of the filters and sort the listing was started with.
    q: String,
    snapshot: i64,
    key: TokenKey,
    id: i64,
}

/// A sort key in a token. Times travel as their IEEE bits: a decimal f64 read back by
/// serde_json can be one unit off, and a key one unit low would repeat a job.
#[derive(Debug, Serialize, Deserialize)]
enum TokenKey {
    Text(String),
    TimeBits(u64),
}

impl Token {
    fn position(self) -> SortPosition {
        let key = match self.key {
            TokenKey::Text(s) => SortKey::Text(s),
            TokenKey::TimeBits(b) => SortKey::Time(f64::from_bits(b)),
        };
        SortPosition { key, id: self.id }
    }
}

/// What a List request asks, whichever kind of job it lists.
pub struct Listing {
    pub operation: &'static str,
    /// Digest of every member of the request but the token and page size.
    pub digest: String,
    pub next_token: Option<String>,
    pub max_results: Option<i32>,
}

/// The digest of a request's filters, bound to its operation (with no filters, both
/// kinds' requests serialize alike).
fn digest_of(operation: &str, bare: &impl Serialize) -> String {
    let json = serde_json::to_vec(bare).expect("list requests serialize");
    let mut h = Sha256::new();
    h.update(operation.as_bytes());
    h.update(json);
    hex::encode(&h.finalize()[..12])
}

/// The digest a token carries: every member of the request but the token and page size.
fn request_digest(req: &ListOptimizationJobsRequest) -> String {
    let mut bare = req.clone();
    bare.next_token = None;
    bare.max_results = None;
    digest_of("ListOptimizationJobs", &bare)
}

impl Listing {
    pub fn of_optimizations(req: &ListOptimizationJobsRequest) -> Listing {
        Listing {
            operation: "ListOptimizationJobs",
            digest: request_digest(req),
            next_token: req.next_token.clone(),
            max_results: req.max_results,
        }
    }

    pub fn of_recommendations(req: &ListInferenceRecommendationsJobsRequest) -> Listing {
        let mut bare = req.clone();
        bare.next_token = None;
        bare.max_results = None;
        Listing {
            operation: "ListInferenceRecommendationsJobs",
            digest: digest_of("ListInferenceRecommendationsJobs", &bare),
            next_token: req.next_token.clone(),
            max_results: req.max_results,
        }
    }

    /// Where the listing resumes and the snapshot it reads: from its NextToken, or the
    /// start and the store's current highest id `max_id`.
    fn resume(&self, max_id: i64) -> Result<(Option<SortPosition>, i64), ApiError> {
        match self.next_token.as_deref().filter(|t| !t.is_empty()) {
            Some(token) => {
                let t = decode(token, self.operation)?;
                if t.q != self.digest {
                    return Err(ApiError::ValidationException(format!(
                        "The NextToken was issued for a {} request with other filters or sort \
                         order; repeat those members with it, or start again without NextToken",
                        self.operation
                    )));
                }
                let snapshot = t.snapshot;
                Ok((Some(t.position()), snapshot))
            }
            None => Ok((None, max_id)),
        }
    }

    /// MaxResults, or the default.
    fn page_size(&self) -> usize {
        self.max_results
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(DEFAULT_MAX_RESULTS)
    }
}

/// The store query for a ListInferenceRecommendationsJobs request.
pub fn recommendation_query(
    req: &ListInferenceRecommendationsJobsRequest,
    max_id: i64,
) -> Result<ListQuery, ApiError> {
    let listing = Listing::of_recommendations(req);
    let (after, snapshot) = listing.resume(max_id)?;
    let status_equals = req.status_equals.and_then(crate::store::stored_status);
    // No job is ever DELETING or DELETED here, nor made from a model package: such a
    // filter matches nothing.
    let nothing = (req.status_equals.is_some() && status_equals.is_none())
        || req.model_package_version_arn_equals.is_some();
    Ok(ListQuery {
        kind: JobKind::Recommendation,
        model_name_equals: req.model_name_equals.clone(),
        creation_time_after: req.creation_time_after.map(|t| t.0),
        creation_time_before: req.creation_time_before.map(|t| t.0),
        last_modified_time_after: req.last_modified_time_after.map(|t| t.0),
        last_modified_time_before: req.last_modified_time_before.map(|t| t.0),
        optimization_contains: None,
        name_contains: req.name_contains.clone(),
        status_equals,
        sort_by: match req.sort_by {
            Some(ListInferenceRecommendationsJobsSortBy::Name) => ListOptimizationJobsSortBy::Name,
            Some(ListInferenceRecommendationsJobsSortBy::Status) => {
                ListOptimizationJobsSortBy::Status
            }
            _ => ListOptimizationJobsSortBy::CreationTime,
        },
        sort_order: req.sort_order.unwrap_or(SortOrder::Ascending),
        after,
        // A snapshot below every id: a status no job can have lists nothing.
        snapshot: Some(if nothing { -1 } else { snapshot }),
        limit: listing.page_size() + 1,
    })
}

/// The store query for a request; `max_id` is the store's current highest job id,
/// the snapshot of a listing that starts now.
pub fn query(req: &ListOptimizationJobsRequest, max_id: i64) -> Result<ListQuery, ApiError> {
    let listing = Listing::of_optimizations(req);
    let (after, snapshot) = listing.resume(max_id)?;
    Ok(ListQuery {
        kind: JobKind::Optimization,
        model_name_equals: None,
        creation_time_after: req.creation_time_after.map(|t| t.0),
        creation_time_before: req.creation_time_before.map(|t| t.0),
        last_modified_time_after: req.last_modified_time_after.map(|t| t.0),
        last_modified_time_before: req.last_modified_time_before.map(|t| t.0),
        optimization_contains: req.optimization_contains.clone(),
        name_contains: req.name_contains.clone(),
        status_equals: req.status_equals,
        sort_by: req
            .sort_by
            .unwrap_or(ListOptimizationJobsSortBy::CreationTime),
        sort_order: req.sort_order.unwrap_or(SortOrder::Ascending),
        after,
        snapshot: Some(snapshot),
        // One more than a page: whether it comes back says if there is a next page.
        limit: listing.page_size() + 1,
    })
}

/// Cuts the store's rows (up to one more than a page) to a page and the token for the
/// rest, if there is a rest.
pub fn page(
    listing: &Listing,
    query: &ListQuery,
    mut rows: Vec<JobSummary>,
) -> (Vec<JobSummary>, Option<String>) {
    let size = listing.page_size();
    if rows.len() <= size {
        return (rows, None);
    }
    rows.truncate(size);
    let last = rows.last().expect("a full page has a last row");
    let key = match query.sort_by {
        ListOptimizationJobsSortBy::Name => TokenKey::Text(last.name.clone()),
        ListOptimizationJobsSortBy::CreationTime => {
            TokenKey::TimeBits(last.creation_time.to_bits())
        }
        ListOptimizationJobsSortBy::Status => {
            TokenKey::Text(crate::store::status_name(last.status).to_string())
        }
    };
    let token = Token {
        q: listing.digest.clone(),
        snapshot: query.snapshot.unwrap_or(i64::MAX),
        key,
        id: last.id,
    };
    let json = serde_json::to_vec(&token).expect("tokens serialize");
    (rows, Some(hex::encode(json)))
}

fn decode(token: &str, operation: &str) -> Result<Token, ApiError> {
    let invalid = || {
        ApiError::ValidationException(format!(
            "The NextToken '{}' is not one this server issued; pass the NextToken of the \
             previous {operation} response unchanged",
            token.chars().take(64).collect::<String>()
        ))
    };
    let bytes = hex::decode(token).map_err(|_| invalid())?;
    serde_json::from_slice(&bytes).map_err(|_| invalid())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_bound_to_their_request() {
        let req = ListOptimizationJobsRequest {
            name_contains: Some("llama".into()),
            max_results: Some(2),
            ..Default::default()
        };
        let q = query(&req, 7).unwrap();
        assert_eq!(q.snapshot, Some(7));
        assert_eq!(q.limit, 3);
        // A time whose decimal form serde_json (without float_roundtrip) reads back one
        // unit off, as about one in eight do.
        let misread = |t: &f64| serde_json::from_str::<f64>(&t.to_string()).unwrap() != *t;
        let time = (0..100_000)
            .map(|i| 1_764_570_000.0 + i as f64 * 0.000_137)
            .find(misread)
            .unwrap_or(1_764_570_000.123_456_7);
        let token = Token {
            q: request_digest(&req),
            snapshot: 7,
            key: TokenKey::TimeBits(time.to_bits()),
            id: 3,
        };
        let encoded = hex::encode(serde_json::to_vec(&token).unwrap());
        // Another page size is the same listing; another filter is not.
        let next = ListOptimizationJobsRequest {
            next_token: Some(encoded.clone()),
            max_results: Some(10),
            ..req.clone()
        };
        let q = query(&next, 99).unwrap();
        assert_eq!(q.snapshot, Some(7));
        let after = q.after.unwrap();
        assert_eq!(after.id, 3);
        assert_eq!(
            after.key,
            SortKey::Time(time),
            "times come back bit for bit"
        );
        let other = ListOptimizationJobsRequest {
            name_contains: Some("mistral".into()),
            ..next
        };
        let err = query(&other, 99).unwrap_err();
        assert!(err.message().contains("other filters"), "{err}");
        let garbage = ListOptimizationJobsRequest {
            next_token: Some("zz-not-hex".into()),
            ..Default::default()
        };
        assert_eq!(
            query(&garbage, 1).unwrap_err().type_name(),
            "ValidationException"
        );
    }
}
