"""Settings: how each knob is read from the environment, what is refused, and its docs."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

from imaging.config import (
    DEFINITIONS,
    GROUPS,
    PRODUCTION_RATE_LIMIT,
    RULES,
    WEBP_MAX_SIDE,
    Settings,
    SettingsError,
    configuration_markdown,
)

DOC = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"

CLOUD_RUN = {
    "K_SERVICE": "svc",
    "STORAGE_BACKEND": "gcs",
    "GCS_BUCKET": "b",
    "GCS_PUBLIC_BUCKET": "b-public",
    "SECRET_KEY": "s",
}
EVENTS = {
    "events_audience": "https://svc.example",
    "events_service_account": "events@p.iam.gserviceaccount.com",
    "uploads_bucket": "uploads",
}
TASKS = {
    **EVENTS,
    "tasks_queue": "projects/p/locations/l/queues/q",
    "tasks_service_account": "tasks@p.iam.gserviceaccount.com",
}


def local_env(tmp_path: Path, **env: str) -> dict[str, str]:
    """An environment whose local secret file lands in ``tmp_path``."""
    return {"MEDIA_ROOT": str(tmp_path / "media"), **env}


# -- reading the environment --------------------------------------------------------------


def test_cloud_run_limits_uploads_by_default() -> None:
    env = dict(CLOUD_RUN)
    assert Settings.from_env(env).rate_limit == "30/minute"
    assert Settings.from_env({**env, "RATE_LIMIT": ""}).rate_limit == ""


def test_off_cloud_run_uploads_are_not_limited_by_default(tmp_path: Path) -> None:
    assert Settings.from_env(local_env(tmp_path)).rate_limit == ""
    assert PRODUCTION_RATE_LIMIT == "30/minute"


def test_an_unset_or_empty_variable_keeps_the_default(tmp_path: Path) -> None:
    settings = Settings.from_env(local_env(tmp_path, PORT="", LABELER=""))
    assert settings.port == Settings().port
    assert settings.labeler == Settings().labeler


def test_each_type_is_read_from_its_text(tmp_path: Path) -> None:
    settings = Settings.from_env(
        local_env(
            tmp_path,
            PORT="9000",
            LABEL_MIN_SCORE="0.5",
            SAFE_SEARCH="yes",
            KEEP_COPYRIGHT="off",
            MODEL_CACHE_DIR="/tmp/models",
            UPLOADS_BUCKET="a, b,",
        )
    )
    assert settings.port == 9000
    assert settings.label_min_score == 0.5
    assert settings.safe_search is True
    assert settings.keep_copyright is False
    assert settings.model_cache_dir == Path("/tmp/models")
    assert settings.uploads_bucket == "a, b,"  # a plain string: its readers split it


@pytest.mark.parametrize(
    ("name", "raw", "message"),
    [
        ("SAFE_SEARCH", "maybe", "SAFE_SEARCH must be a boolean (1/0, true/false), got 'maybe'"),
        ("PORT", "80.5", "PORT must be a whole number, got '80.5'"),
        ("LABEL_TIMEOUT", "soon", "LABEL_TIMEOUT must be a number, got 'soon'"),
    ],
)
def test_malformed_values_are_named(tmp_path: Path, name: str, raw: str, message: str) -> None:
    with pytest.raises(SettingsError, match=re.escape(f"Invalid configuration: {message}")):
        Settings.from_env(local_env(tmp_path, **{name: raw}))


def test_keyword_settings_are_read_case_insensitively(tmp_path: Path) -> None:
    settings = Settings.from_env(local_env(tmp_path, LOG_LEVEL="debug", SAFE_SEARCH_HIDE="likely"))
    assert settings.log_level == "DEBUG"
    assert settings.safe_search_hide == "LIKELY"


def test_default_formats_are_a_list_of_canonical_names(tmp_path: Path) -> None:
    settings = Settings.from_env(local_env(tmp_path, DEFAULT_FORMATS="WEBP, jpg,webp"))
    assert settings.default_formats == ("webp", "jpeg")


def test_an_unknown_default_format_is_refused_with_the_choices(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"Invalid configuration: Unknown output format 'bmp'"):
        Settings.from_env(local_env(tmp_path, DEFAULT_FORMATS="webp,bmp"))


def test_upload_token_holds_comma_separated_tokens(tmp_path: Path) -> None:
    env = local_env(tmp_path, UPLOAD_TOKEN=" old , new,,")
    assert Settings.from_env(env).upload_tokens == ("old", "new")
    assert Settings.from_env(local_env(tmp_path)).upload_tokens == ()


def test_k_service_means_cloud_run(tmp_path: Path) -> None:
    assert Settings.from_env(CLOUD_RUN).on_cloud_run is True
    assert Settings.from_env(local_env(tmp_path)).on_cloud_run is False


def test_internal_fields_are_not_read_from_the_environment(tmp_path: Path) -> None:
    settings = Settings.from_env(local_env(tmp_path, TESTING="1", ON_CLOUD_RUN="1", PRESETS="x"))
    assert settings.testing is False
    assert settings.on_cloud_run is False
    assert settings.presets == Settings().presets


def test_a_local_secret_is_generated_once_and_kept(tmp_path: Path) -> None:
    first = Settings.from_env(local_env(tmp_path)).secret_key
    assert first
    assert (tmp_path / "secret_key").read_text() == first
    assert Settings.from_env(local_env(tmp_path)).secret_key == first


def test_a_given_secret_key_wins_over_the_local_file(tmp_path: Path) -> None:
    assert Settings.from_env(local_env(tmp_path, SECRET_KEY="mine")).secret_key == "mine"
    assert not (tmp_path / "secret_key").exists()


def test_cloud_run_gets_no_generated_secret() -> None:
    env = {key: value for key, value in CLOUD_RUN.items() if key != "SECRET_KEY"}
    with pytest.raises(SettingsError, match="SECRET_KEY is required on Cloud Run"):
        Settings.from_env(env)


def test_the_sizes_in_bytes_follow_the_megabytes() -> None:
    settings = Settings(max_upload_mb=2, direct_upload_max_mb=3, direct_upload_threshold_mb=0.5)
    assert settings.max_upload_bytes == 2 * 1024 * 1024
    assert settings.direct_upload_max_bytes == 3 * 1024 * 1024
    assert settings.direct_upload_threshold_bytes == 512 * 1024


def test_zero_conversion_slots_means_one_per_core() -> None:
    assert Settings(conversion_slots=3).slots == 3
    assert Settings().slots >= 1


# -- validation ---------------------------------------------------------------------------

#: Every rule, with a value that breaks it and the exact problem it reports.
REFUSED: list[tuple[dict[str, Any], str]] = [
    ({"near_copy_distance": 17}, "NEAR_COPY_DISTANCE must be between 0 and 16"),
    ({"storage_backend": "s3"}, "STORAGE_BACKEND must be 'local' or 'gcs'"),
    ({"local_precision": "int4"}, "LOCAL_PRECISION must be 'int8' or 'float'"),
    (
        {"storage_backend": "gcs", "gcs_public_bucket": "p"},
        "GCS_BUCKET is required when STORAGE_BACKEND=gcs",
    ),
    (
        {"storage_backend": "gcs", "gcs_bucket": "b"},
        "GCS_PUBLIC_BUCKET is required when STORAGE_BACKEND=gcs: approved variants are served "
        "from it, and nothing else may be public",
    ),
    (
        {"storage_backend": "gcs", "gcs_bucket": "b", "gcs_public_bucket": "b"},
        "GCS_PUBLIC_BUCKET must not be GCS_BUCKET: the public bucket would expose the records, "
        "the originals and the held-back images",
    ),
    (
        {**EVENTS, "gcs_bucket": "b", "gcs_public_bucket": "p", "uploads_bucket": "uploads, p"},
        "UPLOADS_BUCKET must not name GCS_PUBLIC_BUCKET: originals dropped there would be "
        "public, and its events are the app's own variants",
    ),
    ({"labeler": "clip"}, "LABELER must be 'local', 'vision' or 'none'"),
    (
        {"captioner": "gemini"},
        "CAPTIONER=gemini needs GEMINI_API_KEY (the Gemini API) or GOOGLE_CLOUD_PROJECT "
        "(Vertex AI)",
    ),
    ({"captioner": "blip"}, "CAPTIONER must be 'none' or 'gemini'"),
    ({"caption_timeout": 0.1}, "CAPTION_TIMEOUT must be between 0.5 and 30 seconds"),
    (
        {"captioner": "gemini", "gemini_api_key": "k", "caption_timeout": 25},
        "UPLOAD_DEADLINE must be more than CONVERSION_WAIT + CAPTION_TIMEOUT "
        "(waiting for a slot and for the caption would spend it)",
    ),
    ({"encoder_effort": "max"}, "ENCODER_EFFORT must be 'fast' or 'smallest'"),
    ({"resampler": "magick"}, "RESAMPLER must be 'vips' or 'pillow'"),
    ({"max_upload_mb": 0}, "MAX_UPLOAD_MB must be between 1 and 1024"),
    ({"max_upload_mb": 1025}, "MAX_UPLOAD_MB must be between 1 and 1024"),
    ({"direct_upload_max_mb": 0}, "DIRECT_UPLOAD_MAX_MB must be between 1 and 1024"),
    (
        {"direct_upload_max_mb": 1025, "direct_upload_tmp_max_mb": 1025},
        "DIRECT_UPLOAD_MAX_MB must be between 1 and 1024",
    ),
    ({"direct_upload_max_puts": 0}, "DIRECT_UPLOAD_MAX_PUTS must be between 1 and 64"),
    ({"direct_upload_max_puts": 65}, "DIRECT_UPLOAD_MAX_PUTS must be between 1 and 64"),
    (
        {
            "direct_upload_tmp_max_mb": 0,
            "storage_backend": "gcs",
            "gcs_bucket": "b",
            "gcs_public_bucket": "p",
        },
        "DIRECT_UPLOAD_TMP_MAX_MB must be at least 1",
    ),
    (
        {"direct_upload_tmp_max_mb": 199},
        "DIRECT_UPLOAD_TMP_MAX_MB must be at least DIRECT_UPLOAD_MAX_MB with "
        "STORAGE_BACKEND=local, or the largest direct upload could never be received",
    ),
    ({"direct_upload_threshold_mb": -0.5}, "DIRECT_UPLOAD_THRESHOLD_MB must not be negative"),
    ({"upload_url_ttl": 59}, "UPLOAD_URL_TTL must be between 60 and 604800 seconds"),
    ({"upload_url_ttl": 604801}, "UPLOAD_URL_TTL must be between 60 and 604800 seconds"),
    ({"max_side": 0}, "MAX_SIDE must be between 1 and 16383 (WebP's limit)"),
    ({"max_files_per_request": 0}, "MAX_FILES_PER_REQUEST must be between 1 and 60"),
    ({"max_files_per_request": 61}, "MAX_FILES_PER_REQUEST must be between 1 and 60"),
    ({"max_bulk_images": 0}, "MAX_BULK_IMAGES must be between 1 and 1000"),
    ({"max_bulk_images": 1001}, "MAX_BULK_IMAGES must be between 1 and 1000"),
    ({"svg_trace_side": 15}, "SVG_TRACE_SIDE must be between 16 and 4096"),
    ({"svg_trace_side": 4097}, "SVG_TRACE_SIDE must be between 16 and 4096"),
    ({"svg_max_kb": 0}, "SVG_MAX_KB must be between 1 and 65536"),
    ({"stats_max_records": 0}, "STATS_MAX_RECORDS must be between 1 and 1000000"),
    ({"rate_limit": "lots"}, "RATE_LIMIT must be a limit such as 30/minute"),
    (
        {"rate_limit_storage_uri": "mongodb://db"},
        "RATE_LIMIT_STORAGE_URI must be memory:// or a redis:// or rediss:// URI",
    ),
    ({"max_side": WEBP_MAX_SIDE + 1}, "MAX_SIDE must be between 1 and 16383 (WebP's limit)"),
    ({"max_output_side": 0}, "MAX_OUTPUT_SIDE must be between 1 and 16383"),
    ({"max_output_side": WEBP_MAX_SIDE + 1}, "MAX_OUTPUT_SIDE must be between 1 and 16383"),
    ({"max_pixels": 0}, "MAX_PIXELS must be positive"),
    ({"max_frames": 0}, "MAX_FRAMES must be positive"),
    ({"min_free_disk_mb": -1}, "MIN_FREE_DISK_MB must not be negative"),
    (
        {
            "upload_deadline": 0.5,
            "conversion_wait": 0.1,
            "label_timeout": 0.1,
            "local_features": ("faces",),  # no text reader, whose OCR_TIMEOUT is longer
        },
        "UPLOAD_DEADLINE must be between 1 and 600 seconds",
    ),
    ({"upload_deadline": 601}, "UPLOAD_DEADLINE must be between 1 and 600 seconds"),
    (
        {"upload_deadline": 20, "conversion_wait": 10, "label_timeout": 10},
        "UPLOAD_DEADLINE must be more than CONVERSION_WAIT + LABEL_TIMEOUT "
        "(waiting for a slot and for labels would spend it)",
    ),
    ({"label_min_score": -0.1}, "LABEL_MIN_SCORE must be between 0 and 1"),
    ({"label_min_score": 1.1}, "LABEL_MIN_SCORE must be between 0 and 1"),
    ({"label_max_results": 0}, "LABEL_MAX_RESULTS must be at least 1"),
    ({"local_features": ("faces", "logos")}, "LOCAL_FEATURES has unknown values: logos"),
    ({"vision_features": ()}, "VISION_FEATURES must name at least one of labels, text, faces"),
    ({"vision_features": ("labels", "ocr")}, "VISION_FEATURES has unknown values: ocr"),
    ({"ocr_timeout": 0.1}, "OCR_TIMEOUT must be between 0.5 and 30 seconds"),
    # Without the local labeler's text reader, so only the range is broken.
    ({"ocr_timeout": 31, "labeler": "none"}, "OCR_TIMEOUT must be between 0.5 and 30 seconds"),
    ({"ocr_cpu_seconds": 0}, "OCR_CPU_SECONDS must be between 1 and 30 seconds"),
    (
        {"ocr_timeout": 10},
        "OCR_TIMEOUT and OCR_CPU_SECONDS must be less than LABEL_TIMEOUT when LOCAL_FEATURES "
        "has text (a read still under way would cost the image every label)",
    ),
    (
        {"ocr_cpu_seconds": 12, "label_timeout": 12, "upload_deadline": 60},
        "OCR_TIMEOUT and OCR_CPU_SECONDS must be less than LABEL_TIMEOUT when LOCAL_FEATURES "
        "has text (a read still under way would cost the image every label)",
    ),
    ({"log_format": "xml"}, "LOG_FORMAT must be 'text' or 'json'"),
    ({"smart_crop": "maybe"}, "SMART_CROP must be 'on' or 'off'"),
    ({"log_level": "TRACE"}, "LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR"),
    ({"trace_exporter": "jaeger"}, "TRACE_EXPORTER must be 'none', 'gcp' or 'console'"),
    ({"trace_sample_ratio": -0.1}, "TRACE_SAMPLE_RATIO must be between 0 and 1"),
    ({"trace_sample_ratio": 1.5}, "TRACE_SAMPLE_RATIO must be between 0 and 1"),
    ({"safe_search_hide": "UNLIKELY"}, "SAFE_SEARCH_HIDE must be POSSIBLE, LIKELY or VERY_LIKELY"),
    ({"default_formats": ()}, "DEFAULT_FORMATS must name at least one format"),
    ({"default_formats": ("webp", "bmp", "tga")}, "DEFAULT_FORMATS has unknown formats: bmp, tga"),
    (
        {"on_cloud_run": True, "secret_key": "s"},
        "STORAGE_BACKEND=local on Cloud Run would keep images in the instance's memory, "
        "which vanishes when it scales in; set STORAGE_BACKEND=gcs and GCS_BUCKET "
        "(or ALLOW_LOCAL_STORAGE_ON_CLOUD_RUN=1 for a throwaway demo)",
    ),
    (
        {
            "on_cloud_run": True,
            "storage_backend": "gcs",
            "gcs_bucket": "b",
            "gcs_public_bucket": "p",
        },
        "SECRET_KEY is required on Cloud Run: every instance must sign sessions alike",
    ),
    (
        {"public_url": "https://images.example.com/app"},
        "PUBLIC_URL must be an origin such as https://images.example.com (no path)",
    ),
    (
        {"public_url": "images.example.com"},
        "PUBLIC_URL must be an origin such as https://images.example.com (no path)",
    ),
    (
        {**EVENTS, "events_audience": "svc.example"},
        "EVENTS_AUDIENCE must be the service's URL (https://...)",
    ),
    (
        {**EVENTS, "events_service_account": ""},
        "EVENTS_AUDIENCE needs EVENTS_SERVICE_ACCOUNT (who may call)",
    ),
    (
        {**EVENTS, "uploads_bucket": ""},
        "EVENTS_AUDIENCE needs UPLOADS_BUCKET (whose events to convert)",
    ),
    ({"event_workers": 0}, "EVENT_WORKERS must be between 1 and 32"),
    ({"event_workers": 33}, "EVENT_WORKERS must be between 1 and 32"),
    (
        {**TASKS, "tasks_queue": "projects/p/queues/q"},
        "TASKS_QUEUE must be projects/<p>/locations/<l>/queues/<q>",
    ),
    (
        {**TASKS, "tasks_queue": "projects/p/locations//queues/q"},
        "TASKS_QUEUE must be projects/<p>/locations/<l>/queues/<q>",
    ),
    (
        {**TASKS, "tasks_queue": "projects/p/regions/l/queues/q"},
        "TASKS_QUEUE must be projects/<p>/locations/<l>/queues/<q>",
    ),
    (
        {**TASKS, "events_audience": "", "events_service_account": "", "uploads_bucket": ""},
        "TASKS_QUEUE needs EVENTS_AUDIENCE (/tasks/convert checks tokens)",
    ),
    (
        {**TASKS, "tasks_service_account": ""},
        "TASKS_QUEUE needs TASKS_SERVICE_ACCOUNT (the OIDC identity)",
    ),
]


@pytest.mark.parametrize(("changes", "problem"), REFUSED)
def test_each_rule_refuses_what_breaks_it(changes: dict[str, Any], problem: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings(**changes).validated()
    message = str(caught.value)
    assert message.startswith("Invalid configuration: ")
    # The broken rule is the only problem: each case breaks one rule and keeps the others.
    assert message == f"Invalid configuration: {problem}"


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"max_upload_mb": 1, "direct_upload_max_mb": 1024, "direct_upload_threshold_mb": 0},
        {"upload_url_ttl": 60, "max_side": WEBP_MAX_SIDE, "max_output_side": 1},
        {"label_min_score": 0.0, "trace_sample_ratio": 1.0, "event_workers": 32},
        {"local_features": (), "vision_features": ("faces",), "ocr_timeout": 30},
        {
            "storage_backend": "gcs",
            "gcs_bucket": "b",
            "gcs_public_bucket": "p",
            "labeler": "vision",
        },
        # The app receives no PUTs on GCS: its tmp/ room binds nothing there.
        {
            "storage_backend": "gcs",
            "gcs_bucket": "b",
            "gcs_public_bucket": "p",
            "direct_upload_tmp_max_mb": 1,
        },
        {"direct_upload_max_puts": 64, "direct_upload_tmp_max_mb": 200},
        {**EVENTS, "gcs_bucket": "b", "gcs_public_bucket": "p", "uploads_bucket": "b,uploads"},
        {"safe_search_hide": "VERY_LIKELY", "log_level": "ERROR", "log_format": "json"},
        {"on_cloud_run": True, "allow_local_storage_on_cloud_run": True, "secret_key": "s"},
        {**TASKS, "events_audience": "http://localhost:8080"},
    ],
)
def test_values_inside_every_rule_are_accepted(changes: dict[str, Any]) -> None:
    settings = Settings(**changes)
    assert settings.validated() is settings


def test_features_are_read_as_lower_case_words_and_none_means_none() -> None:
    settings = Settings.from_env(
        {"LOCAL_FEATURES": "none", "VISION_FEATURES": "Labels, FACES", "SECRET_KEY": "s"}
    )
    assert (settings.local_features, settings.vision_features) == ((), ("labels", "faces"))
    with pytest.raises(SettingsError, match="VISION_FEATURES must name at least one"):
        Settings.from_env({"VISION_FEATURES": "none", "SECRET_KEY": "s"})


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(SettingsError) as caught:
        Settings(labeler="clip", max_frames=0).validated()
    assert "LABELER must be" in str(caught.value)
    assert "MAX_FRAMES must be positive" in str(caught.value)


def test_replace_validates_the_copy() -> None:
    assert Settings().replace(port=9000).port == 9000
    with pytest.raises(SettingsError, match="MAX_FRAMES must be positive"):
        Settings().replace(max_frames=0)


def test_every_check_and_every_rule_has_a_case_above() -> None:
    problems = [problem for _, problem in REFUSED]
    checked = {d.env for d in DEFINITIONS if d.check is not None}
    untested = {env for env in checked if not any(p.startswith(f"{env} ") for p in problems)}
    assert untested == set(), "add a REFUSED case for each"
    assert [r.problem for r in RULES if r.problem not in problems] == []


# -- the declarations and their docs ------------------------------------------------------


def test_every_field_is_declared_as_a_setting_or_internal() -> None:
    declared = {d.name for d in DEFINITIONS}
    assert {f.name for f in fields(Settings)} - declared == {"presets", "testing"}


def test_every_setting_has_a_meaning_and_a_group() -> None:
    for d in DEFINITIONS:
        assert d.doc.strip(), d.env
        assert d.group in GROUPS, d.env
    assert {d.group for d in DEFINITIONS} == set(GROUPS)  # no group is left empty


def test_every_variable_names_one_setting() -> None:
    names = [d.env for d in DEFINITIONS]
    assert len(names) == len(set(names))
    assert all(re.fullmatch(r"[A-Z][A-Z0-9_]*", name) for name in names)


def test_every_default_reads_back_from_its_own_text() -> None:
    """The docs show each default as its variable would be written."""
    for d in DEFINITIONS:
        shown = d.shown_default()
        if d.shown or not shown.startswith("`"):
            continue  # explained in words, or empty
        text = shown.strip("`").removeprefix("./")
        assert d.read(text) == d.default, d.env


def test_the_configuration_doc_is_generated_from_the_settings() -> None:
    assert DOC.read_text() == configuration_markdown(), (
        "docs/configuration.md is stale: run python -m imaging.config > docs/configuration.md"
    )


def test_the_doc_has_one_row_per_setting_under_its_group_with_its_rules() -> None:
    group = ""
    rows: dict[str, tuple[str, str]] = {}
    for line in configuration_markdown().splitlines():
        if line.startswith("## "):
            group = line.removeprefix("## ").lower()
        elif match := re.match(r"^\| `([A-Z0-9_]+)` \|", line):
            assert match.group(1) not in rows
            rows[match.group(1)] = (group, line)
    assert set(rows) == {d.env for d in DEFINITIONS}
    for d in DEFINITIONS:
        assert rows[d.env][0] == d.group
        assert f" | {d.doc} | " in rows[d.env][1]
        if d.check is not None:
            assert d.check.allowed() in rows[d.env][1]
    for rule in RULES:
        env = next(d.env for d in DEFINITIONS if d.name == rule.setting)
        assert rule.says in rows[env][1]
