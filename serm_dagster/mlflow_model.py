"""The MLflow pyfunc of the relevance model (logged as code: no pickled objects in the registry).

``predict`` takes a DataFrame with ``query`` and ``doc_text`` and returns the label distribution
``p0..p3`` and the score ``f = sum_y y * p_y``.
"""

import mlflow
import pandas as pd


class RelevancePyfunc(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        from models.inference import Scorer

        # a model server answers many small requests: no progress line per request on its terminal
        self.scorer = Scorer.from_folder(context.artifacts["model_dir"], device="auto", progress=False)

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        probs = self.scorer.predict_proba(model_input["query"].tolist(), model_input["doc_text"].tolist())
        frame = pd.DataFrame(probs, columns=["p0", "p1", "p2", "p3"], index=model_input.index)
        frame["score"] = probs @ [0.0, 1.0, 2.0, 3.0]
        return frame


mlflow.models.set_model(RelevancePyfunc())
