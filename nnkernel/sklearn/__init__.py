"""scikit-learn estimators over nnkernel: ``NNClassifier`` and ``NNRegressor``.

    from nnkernel.sklearn import NNClassifier
    clf = NNClassifier(hidden_layer_sizes=(64,), epochs=30, random_state=0).fit(X, y)
    clf.predict_proba(X_test)

A thin layer over `nnkernel.fit` in skorch's shape, with MLPClassifier's contract where
it makes sense. One idea a module:

- `params`: the constructor parameters, checked in one place at fit;
- `network`: the network of a fit (the command line's MLP builder, or ``model=``) and
  its optimizer;
- `inputs`: data in and out (scikit-learn's checks, array_api_dispatch, float32's
  range, sparse rows);
- `training`: MLPClassifier's epoch rules (tol, n_iter_no_change, early stopping);
- `base`, `classifier`, `regressor`: the estimators; `checks`: the check_estimator
  checks they fail by nature.

scikit-learn is an optional extra (``pip install "nnkernel[sklearn]"``); the core of
nnkernel never imports this package.
"""

try:
    import sklearn  # noqa: F401
    from sklearn.utils.validation import validate_data  # noqa: F401 - scikit-learn >= 1.6
except ImportError as error:  # pragma: no cover - exercised only without the extra
    raise ImportError("nnkernel.sklearn needs scikit-learn >= 1.6; install it with "
                      "pip install \"nnkernel[sklearn]\"") from error

from .checks import expected_failed_checks
from .classifier import NNClassifier
from .regressor import NNRegressor

__all__ = ["NNClassifier", "NNRegressor", "expected_failed_checks"]
