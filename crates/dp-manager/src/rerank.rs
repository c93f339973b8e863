//! Reranking: a query and documents through a cross-encoder (preset `cross_encoder`), one
//! relevance score per document, optionally the best `top_k` sorted.

use dp_preset::{PresetInputs, PresetOutput};
use dp_signature::ModelsUsedEntry;
use dp_spec::ModelError;
use serde::Serialize;

use crate::error::ManagerError;
use crate::manager::ModelManager;

/// One document of a ranking: where it was in the input and its score.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RankedDocument {
    /// Its position among the documents given (0-based).
    pub index: usize,
    /// Its relevance score.
    pub score: f32,
}

/// The scores of a [`ModelManager::rerank`] call and what made them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RerankOutput {
    /// One score per document, in input order.
    pub scores: Vec<f32>,
    /// The model that made them, as resolved, with its signatures.
    pub models_used: Vec<ModelsUsedEntry>,
    /// The canonical signature of that model (the same as in `models_used`).
    pub model_signature: String,
}

impl RerankOutput {
    /// The `top_k` best documents, best first (ties keep input order); all of them when
    /// `top_k` is larger than their number.
    ///
    /// ```
    /// use dp_manager::{RankedDocument, RerankOutput};
    ///
    /// let output = RerankOutput {
    ///     scores: vec![0.1, 0.9, 0.5],
    ///     models_used: Vec::new(),
    ///     model_signature: String::new(),
    /// };
    /// let top = output.top_k(2);
    /// assert_eq!(top, [RankedDocument { index: 1, score: 0.9 }, RankedDocument { index: 2, score: 0.5 }]);
    /// ```
    #[must_use]
    pub fn top_k(&self, top_k: usize) -> Vec<RankedDocument> {
        rank(&self.scores, top_k)
    }
}

/// The `top_k` best of `scores`, best first; ties keep input order.
pub(crate) fn rank(scores: &[f32], top_k: usize) -> Vec<RankedDocument> {
    let mut ranked: Vec<RankedDocument> = scores
        .iter()
        .enumerate()
        .map(|(index, &score)| RankedDocument { index, score })
        .collect();
    // A stable sort on the descending total order: NaN cannot reorder the rest.
    ranked.sort_by(|a, b| b.score.total_cmp(&a.score));
    ranked.truncate(top_k);
    ranked
}

impl ModelManager {
    /// Scores each of `documents` against `query` with the cross-encoder `model` (a name
    /// or alias whose preset is `cross_encoder`): one score per document, in input order.
    ///
    /// # Errors
    /// `invalid_input` with reason `query_missing` for an empty query, `documents_missing`
    /// for no documents, and `rerank_unsupported` for a model that is not a cross-encoder;
    /// otherwise as [`Self::run_preset`].
    pub fn rerank(
        &self,
        model: &str,
        query: &str,
        documents: &[&str],
    ) -> Result<RerankOutput, ModelError> {
        if query.trim().is_empty() {
            return Err(ModelError::from(ManagerError::BadTask {
                message: format!(
                    "rerank with model {model} needs a query: give the text the documents are \
                     scored against"
                ),
            })
            .with_detail("reason", "query_missing"));
        }
        if documents.is_empty() {
            return Err(ModelError::from(ManagerError::BadTask {
                message: format!(
                    "rerank with model {model} needs at least one document to score against \
                     the query"
                ),
            })
            .with_detail("reason", "documents_missing"));
        }
        let run = self.run_preset(model, PresetInputs::QueryWithDocuments { query, documents })?;
        match run.output {
            PresetOutput::Scores(scores) => Ok(RerankOutput {
                scores,
                models_used: run.models_used,
                model_signature: run.model_signature,
            }),
            _ => Err(ModelError::from(ManagerError::BadTask {
                message: format!("model {model}'s preset does not make scores"),
            })),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranking_is_by_score_then_input_order() {
        let ranked = rank(&[0.2, 0.7, 0.2, f32::NAN, 0.9], 4);
        let order: Vec<usize> = ranked.iter().map(|r| r.index).collect();
        // NaN sorts above every number in the total order, so it is never silently dropped.
        assert_eq!(order, [3, 4, 1, 0]);
        assert_eq!(rank(&[1.0, 2.0], 10).len(), 2);
        assert!(rank(&[1.0], 0).is_empty());
    }
}
