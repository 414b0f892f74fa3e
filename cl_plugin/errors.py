"""One small hierarchy of errors. Each message says what was wrong and what to do about it."""

from __future__ import annotations

__all__ = [
    "ABTestEndedError",
    "ABTestError",
    "ArtifactIntegrityError",
    "AttachmentTooLargeError",
    "ClPluginError",
    "ConfigError",
    "DriftInputError",
    "FeedbackTokenError",
    "InvalidRecordError",
    "MissingDependencyError",
    "PrivacyConfigError",
    "RegistryError",
    "StoreError",
    "StoreSchemaError",
    "StoreUnavailableError",
    "UnknownABTestError",
    "UnknownInteractionError",
    "UnsupportedAttachmentError",
    "UntrustedArtifactError",
]


class ClPluginError(Exception):
    """Base class of every error cl_plugin raises on purpose."""


class ConfigError(ClPluginError, ValueError):
    """A configuration key is misspelt, ill-typed or out of range.

    Attributes:
        key: dotted path of the offending key (``"logging.buffer_size"``).
    """

    def __init__(self, message: str, *, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


class InvalidRecordError(ClPluginError, ValueError):
    """A record handed to the logger or the store cannot be stored as given.

    Attributes:
        field: the offending field (``"latency_ms"``).
        interaction_id: the record's id, when it has one.
    """

    def __init__(self, message: str, *, field: str, interaction_id: str | None = None) -> None:
        super().__init__(message)
        self.field = field
        self.interaction_id = interaction_id


class AttachmentTooLargeError(InvalidRecordError):
    """A feedback attachment is larger than the configured limit (bytes, pixels or count)."""


class UnsupportedAttachmentError(InvalidRecordError):
    """A feedback attachment is not of a type cl_plugin stores (an image that is not PNG, JPEG or WebP)."""


class FeedbackTokenError(ClPluginError, ValueError):
    """A feedback token was refused.

    Attributes:
        reason: ``"malformed"``, ``"forged"`` (its signature does not match the key), ``"expired"`` or
            ``"wrong_interaction"`` (it was minted for another interaction).
    """

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class PrivacyConfigError(ConfigError):
    """Privacy settings ask for something that cannot be done (for example hashing without a key)."""


class StoreError(ClPluginError):
    """The store could not do what was asked."""


class StoreSchemaError(StoreError):
    """The database's tables are missing, incomplete or older than this cl_plugin; the message has the fix.

    Not an outage: waiting does not help, running the migrations (``Store.setup()`` or ``cl-plugin migrate``)
    does.
    """


class StoreUnavailableError(StoreError):
    """The database cannot be reached right now; the writer spills to its journal meanwhile."""


class UnknownInteractionError(StoreError, KeyError):
    """An operation names an interaction id that the store has never seen.

    Attributes:
        interaction_id: the unknown id.
    """

    def __init__(self, interaction_id: str) -> None:
        super().__init__(
            f"no interaction with id {interaction_id!r} exists in the store; "
            "check the id (it is the root run id of the graph invocation, or the id you logged)"
        )
        self.interaction_id = interaction_id

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0])


class MissingDependencyError(ClPluginError, ImportError):
    """An optional extra is needed; the message carries the exact ``pip install`` command."""

    def __init__(self, feature: str, extra: str, package: str) -> None:
        super().__init__(
            f"{feature} needs the optional package {package!r}: run `pip install 'cl-plugin[{extra}]'`"
        )


class RegistryError(StoreError):
    """The model registry could not do what was asked (an unknown model, version or alias, say).

    Attributes:
        model_name: the model the operation was about.
    """

    def __init__(self, message: str, *, model_name: str) -> None:
        super().__init__(message)
        self.model_name = model_name


class ArtifactIntegrityError(RegistryError):
    """A model artifact is missing or its bytes differ from the ones registered; nothing was deserialized.

    Attributes:
        model_name: the model.
        version: the registry version whose artifact failed the check (None for a model directory).
        path: the artifact file.
        expected: the sha256 recorded at registration.
        actual: the sha256 of the file now, or None when the file is missing.
    """

    def __init__(
        self, *, model_name: str, version: int | None, path: str, expected: str, actual: str | None
    ) -> None:
        found = "is missing" if actual is None else f"has sha256 {actual}"
        which = f"model {model_name!r}" + ("" if version is None else f" version {version}")
        super().__init__(
            f"artifact {path} of {which} {found}, but sha256 {expected} was recorded; it was not loaded. "
            "Restore the file from a backup, or save or register the model again",
            model_name=model_name,
        )
        self.version = version
        self.path = path
        self.expected = expected
        self.actual = actual


class UntrustedArtifactError(RegistryError):
    """A model (or its artifact) holds types from modules outside the registry's allow-list.

    Attributes:
        model_name: the model.
        types: the fully qualified names of the refused types.
    """

    def __init__(self, message: str, *, model_name: str, types: list[str]) -> None:
        super().__init__(message, model_name=model_name)
        self.types = types


class ABTestError(ClPluginError, ValueError):
    """An A/B test was asked to do something with input it cannot accept (a group other than A or B, say).

    Attributes:
        field: the offending argument (``"group"``, ``"metric"``, ``"unit_id"``, ...).
        test_id: the test, when the call named one.
    """

    def __init__(self, message: str, *, field: str, test_id: str | None = None) -> None:
        super().__init__(message)
        self.field = field
        self.test_id = test_id


class UnknownABTestError(ABTestError, KeyError):
    """An operation names a test id that was never created (here, or in the store the framework uses).

    Attributes:
        test_id: the unknown id.
    """

    def __init__(self, test_id: object) -> None:
        super().__init__(
            f"no A/B test with id {test_id!r} exists; use the id create_test() returned (tests created in "
            "another process are found only when both frameworks use the same store)",
            field="test_id",
            test_id=str(test_id),
        )

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0])


class ABTestEndedError(ABTestError):
    """A result was recorded for a test that has ended; its analysis is final.

    Attributes:
        test_id: the ended test.
    """

    def __init__(self, test_id: str, name: str) -> None:
        super().__init__(
            f"A/B test {name!r} ({test_id}) has ended, so it takes no more results; read its final analysis "
            "with get_test_status(test_id), or create a new test to keep comparing",
            field="test_id",
            test_id=test_id,
        )


class DriftInputError(ClPluginError, ValueError):
    """A drift detector was given a parameter or a sample it cannot use.

    Attributes:
        field: the offending parameter or sample field (``"window_size"``, ``"sample"``, ``"x"``).
    """

    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(message)
        self.field = field
