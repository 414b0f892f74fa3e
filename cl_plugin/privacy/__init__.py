"""Privacy: PII detection and redaction, keyed id hashing, the sanitizer every sink writes through, and the
``DataQualityValidator``.

The foundation under the store: nothing here imports the store or any stage of the loop, so every part
(the store's writer, the LangSmith bridge, reports, pages) sanitizes through the same code.

* :mod:`~cl_plugin.privacy.detectors`: :class:`PIIRedactor`, the typed detectors and their validation;
* :mod:`~cl_plugin.privacy.ids`: :func:`hash_identifier`, :func:`safe_identifier` and the hashing key;
* :mod:`~cl_plugin.privacy.sanitize`: :class:`Sanitizer`, which makes a record's values safe to store;
* :mod:`~cl_plugin.privacy.attachments`: feedback attachments checked, images re-encoded without metadata;
* :mod:`~cl_plugin.privacy.tokens`: signed feedback tokens scoped to one interaction;
* :mod:`~cl_plugin.privacy.quality`: :class:`DataQualityValidator`, the original design's validator.
"""

from cl_plugin.privacy.detectors import PII_TYPES, REDACTED, PIIMatch, PIIRedactor, default_redactor
from cl_plugin.privacy.ids import HASH_KEY_FILE_ENV, hash_identifier, id_hash_key
from cl_plugin.privacy.quality import DataQualityValidator
from cl_plugin.privacy.sanitize import Sanitizer, repair_text, safe_identifier

__all__ = [
    "HASH_KEY_FILE_ENV",
    "PII_TYPES",
    "REDACTED",
    "DataQualityValidator",
    "PIIMatch",
    "PIIRedactor",
    "Sanitizer",
    "default_redactor",
    "hash_identifier",
    "id_hash_key",
    "repair_text",
    "safe_identifier",
]
