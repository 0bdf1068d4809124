"""PrefLab settings: one module, read from the environment, with defaults that run on a laptop."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import unquote, urlsplit

from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env_str(name: str, default: str) -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    if value.lower() in {"1", "true", "yes", "on"}:
        return True
    if value.lower() in {"0", "false", "no", "off", ""}:
        return False
    raise ImproperlyConfigured(f"{name} must be true or false, not {value!r}")


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a whole number, not {value!r}") from None


def parse_database_url(url: str) -> dict[str, object]:
    """postgres://user:password@host:port/name or sqlite:///path (sqlite:////absolute/path)."""
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        return {"ENGINE": "django.db.backends.sqlite3", "NAME": unquote(parts.path[1:])}
    if parts.scheme in {"postgres", "postgresql", "pgsql"}:
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": unquote(parts.path[1:]),
            "USER": unquote(parts.username or ""),
            "PASSWORD": unquote(parts.password or ""),
            "HOST": parts.hostname or "",
            "PORT": str(parts.port or ""),
            "CONN_MAX_AGE": env_int("CONN_MAX_AGE", 60),
            "CONN_HEALTH_CHECKS": True,
            # Parameters bound by the server and statements prepared on their second run:
            # PostgreSQL stops planning the labeling loop's queries anew on every request, which
            # halves its CPU per labeled pair. A pooler in transaction mode (PgBouncer before
            # 1.21) cannot keep prepared statements: set DATABASE_PREPARED_STATEMENTS=false.
            "OPTIONS": {"server_side_binding": True, "prepare_threshold": 2}
            if env_bool("DATABASE_PREPARED_STATEMENTS", True)
            else {},
        }
    raise ImproperlyConfigured(f"DATABASE_URL scheme {parts.scheme!r} is not supported")


DATA_DIR = Path(env_str("PREFLAB_DATA_DIR", str(BASE_DIR / "var")))

DEBUG = env_bool("DEBUG", True)
_DEVELOPMENT_KEY = "django-insecure-preflab-development-key-do-not-use-in-production"
SECRET_KEY = env_str("SECRET_KEY", _DEVELOPMENT_KEY)
if not DEBUG and SECRET_KEY == _DEVELOPMENT_KEY:
    raise ImproperlyConfigured("Set SECRET_KEY when DEBUG is off.")
ALLOWED_HOSTS = [h for h in env_str("ALLOWED_HOSTS", "127.0.0.1,localhost").split(",") if h]
CSRF_TRUSTED_ORIGINS = [o for o in env_str("CSRF_TRUSTED_ORIGINS", "").split(",") if o]

# HTTPS. Behind a TLS proxy set PREFLAB_HTTPS=true: cookies are sent over HTTPS only, plain HTTP
# is redirected, browsers are told to keep to HTTPS (HSTS), and the proxy's X-Forwarded-Proto
# header says whether a request came in over HTTPS (the proxy must set it, and strip a client's).
PREFLAB_HTTPS = env_bool("PREFLAB_HTTPS", False)
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = PREFLAB_HTTPS
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", PREFLAB_HTTPS)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31_536_000 if PREFLAB_HTTPS else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", PREFLAB_HTTPS)
# The header's preload directive only allows submitting the domain to browsers' preload lists.
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", PREFLAB_HTTPS)
if PREFLAB_HTTPS:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# /healthz answers load balancers over plain HTTP.
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
SECURE_REFERRER_POLICY = "same-origin"
# Sent by config.middleware.ContentSecurityPolicy: no page runs inline or foreign script.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; object-src 'none'; base-uri 'self'; form-action 'self'; "
    "frame-ancestors 'none'"
)

INSTALLED_APPS = [
    "config.apps.AdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "labeling",
    "rewards",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "config.middleware.ContentSecurityPolicy",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
# A form refused by the CSRF check gets templates/403.html, in PrefLab's layout.
CSRF_FAILURE_VIEW = "config.views.csrf_failure"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "labeling.context_processors.abilities",
            ],
        },
    },
]

if os.environ.get("DATABASE_URL"):
    DATABASES = {"default": parse_database_url(os.environ["DATABASE_URL"])}
else:
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": DATA_DIR / "preflab.sqlite3",
            "OPTIONS": {
                # IMMEDIATE takes the write lock when a transaction starts, so the web server
                # and workers wait for each other instead of failing with "database is locked".
                "transaction_mode": "IMMEDIATE",
                "timeout": 20,
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            },
        }
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "labeling:home"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("TIME_ZONE", "UTC")
USE_I18N = False
USE_TZ = True

MEDIA_ROOT = DATA_DIR / "media"

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(env_str("STATIC_ROOT", str(BASE_DIR / "staticfiles")))
# The web processes serve static files themselves (WhiteNoise): with DEBUG off, compressed files
# with content hashes in their names, made by `manage.py collectstatic` (`make serve` runs it).
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "config.static.StaticFilesStorage"
    },
}
# In development (and tests) static files are found where they are, without collectstatic.
WHITENOISE_AUTOREFRESH = WHITENOISE_USE_FINDERS = DEBUG

# The shared cache holds the throttles' counters and the workers' heartbeat, so every web
# process and worker must see the same one: Redis in production (CACHE_URL=redis://...). The
# default, files under the data directory, is shared by the processes of one machine.
CACHE_URL = env_str("CACHE_URL", "")
CACHES = {
    "default": {"BACKEND": "config.cache.RedisCache", "LOCATION": CACHE_URL}
    if CACHE_URL
    else {
        "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
        "LOCATION": str(DATA_DIR / "cache"),
    }
}

# Labeling
PREFLAB_LEASE_MINUTES = env_int("PREFLAB_LEASE_MINUTES", 30)
PREFLAB_MAX_TEXT_CHARS = env_int("PREFLAB_MAX_TEXT_CHARS", 100_000)
PREFLAB_IMPORT_MAX_BYTES = env_int("PREFLAB_IMPORT_MAX_BYTES", 1024 * 1024 * 1024)
# Checked while a file is read, so a worker's memory stays bounded whatever the file holds.
PREFLAB_IMPORT_MAX_UNCOMPRESSED_BYTES = env_int(
    "PREFLAB_IMPORT_MAX_UNCOMPRESSED_BYTES", 4 * 1024**3
)
PREFLAB_IMPORT_MAX_LINE_BYTES = env_int("PREFLAB_IMPORT_MAX_LINE_BYTES", 8 * 1024**2)
PREFLAB_IMPORT_MAX_PROMPTS = env_int("PREFLAB_IMPORT_MAX_PROMPTS", 2_000_000)
# `manage.py load_demo` keeps the demo accounts' generated passwords here (readable by the owner
# only, never committed), so `make run` can show them every time (`manage.py demo_accounts`).
PREFLAB_DEMO_ACCOUNTS_FILE = DATA_DIR / "demo-accounts.json"
# Uploads no queued or running import needs are deleted after this many hours.
PREFLAB_UPLOAD_RETENTION_HOURS = env_int("PREFLAB_UPLOAD_RETENTION_HOURS", 24)
# Key of the pseudonymous labeler ids in exports; change it and every pseudonym changes.
PREFLAB_PSEUDONYM_KEY = env_str("PREFLAB_PSEUDONYM_KEY", SECRET_KEY)
# Uploads above this size are streamed to a temporary file instead of memory.
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024
DATA_UPLOAD_MAX_NUMBER_FIELDS = 2000

# Reward models
# A running training run whose worker has not reported for this long is marked failed.
PREFLAB_RUN_STALE_SECONDS = env_int("PREFLAB_RUN_STALE_SECONDS", 120)
PREFLAB_SCORE_BATCH_MAX = 1000
# JSON bodies of the API: the score endpoint takes a batch of long conversations, others less.
# (Above DATA_UPLOAD_MAX_MEMORY_SIZE, 2.5 MiB, the body is read past Django's own limit.)
PREFLAB_API_MAX_JSON_BYTES = env_int("PREFLAB_API_MAX_JSON_BYTES", 2 * 1024**2)
PREFLAB_SCORE_MAX_JSON_BYTES = env_int("PREFLAB_SCORE_MAX_JSON_BYTES", 16 * 1024**2)
PREFLAB_API_MAX_JSON_DEPTH = 32
# The quality dashboard reads a precomputed report; a view asks a worker to refresh it when newer
# rankings exist and it is older than this. Up to INLINE rankings, the view computes it at once.
PREFLAB_QUALITY_REFRESH_SECONDS = env_int("PREFLAB_QUALITY_REFRESH_SECONDS", 60)
PREFLAB_QUALITY_INLINE_RANKINGS = env_int("PREFLAB_QUALITY_INLINE_RANKINGS", 5000)
# The model leaderboard: bootstrap rounds by default and the range a request may ask for, and how
# many datasets one leaderboard may pool.
PREFLAB_LEADERBOARD_ROUNDS = env_int("PREFLAB_LEADERBOARD_ROUNDS", 1000)
PREFLAB_LEADERBOARD_MIN_ROUNDS = 100
PREFLAB_LEADERBOARD_MAX_ROUNDS = 5000
PREFLAB_LEADERBOARD_MAX_DATASETS = 20
# Up to this many rankings a stale leaderboard is computed in the request; above, by a worker
# while the page shows the last one.
PREFLAB_LEADERBOARD_INLINE_RANKINGS = env_int("PREFLAB_LEADERBOARD_INLINE_RANKINGS", 10000)

# How many proxies (a TLS terminator, a load balancer) stand in front of the web processes: the
# client's address, which login and anonymous API throttles count by, is then that many entries
# from the right of X-Forwarded-For. 0: the address the request came from.
PREFLAB_PROXY_COUNT = env_int("PREFLAB_PROXY_COUNT", 0)
# Failed sign-ins allowed per account and per address within the window; past them, signing in
# (with any password) waits for the window to pass or `manage.py reset_login_throttle`.
PREFLAB_LOGIN_FAILURES_PER_ACCOUNT = env_int("PREFLAB_LOGIN_FAILURES_PER_ACCOUNT", 5)
PREFLAB_LOGIN_FAILURES_PER_ADDRESS = env_int("PREFLAB_LOGIN_FAILURES_PER_ADDRESS", 20)
PREFLAB_LOGIN_WINDOW_SECONDS = env_int("PREFLAB_LOGIN_WINDOW_SECONDS", 15 * 60)
# Password reset e-mails asked for per e-mail address and per client address within the window;
# past them the form says to wait. Counted whether or not an account has the e-mail address.
PREFLAB_PASSWORD_RESETS_PER_EMAIL = env_int("PREFLAB_PASSWORD_RESETS_PER_EMAIL", 3)
PREFLAB_PASSWORD_RESETS_PER_ADDRESS = env_int("PREFLAB_PASSWORD_RESETS_PER_ADDRESS", 10)
PREFLAB_PASSWORD_RESET_WINDOW_SECONDS = env_int("PREFLAB_PASSWORD_RESET_WINDOW_SECONDS", 60 * 60)
# How long a reset link works.
PASSWORD_RESET_TIMEOUT = env_int("PASSWORD_RESET_TIMEOUT", 24 * 60 * 60)

# E-mail (password reset links), sent by the Celery worker. Without EMAIL_HOST, e-mails are
# printed to the worker's log instead of sent (Django's console backend).
EMAIL_HOST = env_str("EMAIL_HOST", "")
EMAIL_BACKEND = (
    "django.core.mail.backends.smtp.EmailBackend"
    if EMAIL_HOST
    else "django.core.mail.backends.console.EmailBackend"
)
EMAIL_PORT = env_int("EMAIL_PORT", 587)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD", "")
# STARTTLS on the submission port (587) by default; EMAIL_USE_SSL=true for TLS from the start
# (port 465). Django refuses both at once.
EMAIL_USE_SSL = env_bool("EMAIL_USE_SSL", False)
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", not EMAIL_USE_SSL)
EMAIL_TIMEOUT = env_int("EMAIL_TIMEOUT", 30)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "PrefLab <preflab@localhost>")
SERVER_EMAIL = DEFAULT_FROM_EMAIL

# REST API
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "labeling.accounts.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "EXCEPTION_HANDLER": "config.api.exception_handler",
    # JSON bodies, bounded; multipart only where a file is uploaded (imports).
    "DEFAULT_PARSER_CLASSES": ["config.api.LimitedJSONParser"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "UNAUTHENTICATED_USER": None,
    # Per token (or signed-in user), and per address for anonymous calls; 429 with Retry-After;
    # counted in fixed windows (config.api.CountingThrottle).
    "DEFAULT_THROTTLE_CLASSES": [
        "config.api.AnonRateThrottle",
        "config.api.UserRateThrottle",
    ],
    "DEFAULT_THROTTLE_RATES": {
        "anon": env_str("PREFLAB_API_ANON_RATE", "60/minute"),
        "user": env_str("PREFLAB_API_RATE", "1200/minute"),
    },
    "NUM_PROXIES": PREFLAB_PROXY_COUNT or None,
    # ?format= names an export format, not a renderer.
    "URL_FORMAT_OVERRIDE": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "PrefLab API",
    "DESCRIPTION": "Datasets, labeling and streamed preference exports for training pipelines.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI from the installed sidecar package: the docs work offline, under the CSP.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "config.api.add_error_responses",
    ],
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {
        "DatasetStatusEnum": "labeling.models.Dataset.Status",
        "ImportStatusEnum": "labeling.models.ImportJob.Status",
        "AssignmentStatusEnum": "labeling.models.Assignment.Status",
        "AskedEnum": "labeling.models.Asked",
        "ReportStatusEnum": "labeling.quality_serializers.REPORT_STATUSES",
        "WorkspaceRoleEnum": "labeling.workspace_models.Role",
        "AuditActionEnum": "labeling.audit_models.AuditEvent.Action",
    },
}

# Celery. Without CELERY_BROKER_URL, a broker that needs no server: kombu's filesystem transport,
# whose queue is a folder under the data directory shared by the web server and the worker.
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", "filesystem://")
CELERY_QUEUE_DIR = DATA_DIR / "celery"
CELERY_BROKER_TRANSPORT_OPTIONS = (
    {
        "data_folder_in": str(CELERY_QUEUE_DIR / "queue"),
        "data_folder_out": str(CELERY_QUEUE_DIR / "queue"),
        "control_folder": str(CELERY_QUEUE_DIR / "control"),
    }
    if CELERY_BROKER_URL.startswith("filesystem")
    else {}
)
for _folder in CELERY_BROKER_TRANSPORT_OPTIONS.values():
    Path(_folder).mkdir(parents=True, exist_ok=True)
CELERY_TASK_IGNORE_RESULT = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_TIME_LIMIT = env_int("CELERY_TASK_TIME_LIMIT", 60 * 60)
CELERY_TASK_SOFT_TIME_LIMIT = CELERY_TASK_TIME_LIMIT - 60
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Celery beat (one process for the whole installation; `make serve` starts it) runs these.
PREFLAB_PERIODIC_SECONDS = env_int("PREFLAB_PERIODIC_SECONDS", 60)
# A run that waits in the queue longer than its interval is dropped (the next one comes).
CELERY_BEAT_SCHEDULE = {
    name: {"task": name, "schedule": float(seconds), "options": {"expires": float(seconds)}}
    for name, seconds in {
        "labeling.expire_stale_leases": PREFLAB_PERIODIC_SECONDS,
        "labeling.refresh_stale_reports": PREFLAB_PERIODIC_SECONDS,
        "labeling.reclaim_stale_imports": PREFLAB_PERIODIC_SECONDS,
        "rewards.reclaim_stale_runs": PREFLAB_PERIODIC_SECONDS,
        "rewards.reclaim_stale_prediction_jobs": PREFLAB_PERIODIC_SECONDS,
        "labeling.delete_old_uploads": 3600,
    }.items()
}
# The schedule is kept in memory: every job is a short interval, so a restart loses nothing.
CELERY_BEAT_SCHEDULER = "celery.beat:Scheduler"
# Each worker process notes itself seen this often; /healthz fails when none has for SEEN.
PREFLAB_WORKER_HEARTBEAT_SECONDS = min(30, PREFLAB_PERIODIC_SECONDS)
PREFLAB_WORKER_SEEN_SECONDS = env_int("PREFLAB_WORKER_SEEN_SECONDS", 120)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
}
