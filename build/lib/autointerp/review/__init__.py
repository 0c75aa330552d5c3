"""The review app: a local web app for reading, accepting, rejecting and editing explanations.

`create_app(db)` builds the FastAPI app; `autointerp review` serves it on 127.0.0.1.
"""

from autointerp.review.app import ReviewSettings, create_app
from autointerp.review.export import EXPORT_FORMATS, export_reviews

__all__ = ["EXPORT_FORMATS", "ReviewSettings", "create_app", "export_reviews"]
