"""tokenstore settings, as deployed with the Flask service."""
# Flask
SECRET_KEY = b"\xec]/\x8a flask-cookie-key"
DEBUG = False
PREFERRED_URL_SCHEME = 'https'

# Flask-Session
SESSION_TYPE = "filesystem"
SESSION_FILE_DIR = "/tmp/sessions"
SESSION_PERMANENT = True
PERMANENT_SESSION_LIFETIME = 86400

# Flask-SQLAlchemy
SQLALCHEMY_DATABASE_URI = "sqlite+pysqlite:///tokenstore.db"
SQLALCHEMY_TRACK_MODIFICATIONS = False
SQLALCHEMY_ENGINE_OPTIONS = {"pool_pre_ping": True, "pool_recycle": 3600}

# Login (flask_tern)
OIDC_DISCOVERY_URL = (
    "https://auth.example.com/auth/realms/example"
    "/.well-known/openid-configuration"
)
OIDC_CLIENT_ID = 'tokenstore'
OIDC_CLIENT_SECRET = """tokenstore_client_secret"""
OIDC_USE_REFRESH_TOKEN = True

CRYPTOKEY = "0123456789abcdefghijklmnopqrstuv, QkJCQkJCQkJCQkJCQkJCQmJiYmJiYmJiYmJiYmJiYmI=, 000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"

CORS_ORIGINS = ["https://app.example.com", 'https://other.example.com']

# Token providers
TOKEN_PROVIDERS = "tern_keycloak, Google, public"

TERN_KEYCLOAK_DISCOVERY_URL = "https://auth.tern.example/auth/realms/tern/.well-known/openid-configuration"
TERN_KEYCLOAK_CLIENT_ID = "tokenstore"
TERN_KEYCLOAK_CLIENT_SECRET = 'tern-client-secret'
TERN_KEYCLOAK_MD_NAME = "TERN Keycloak"
TERN_KEYCLOAK_MD_DESCRIPTION = 'TERN\'s own login'

GOOGLE_DISCOVERY_URL = "https://accounts.google.com/.well-known/openid-configuration"
GOOGLE_CLIENT_ID = "1234.apps.googleusercontent.com"
GOOGLE_CLIENT_SECRET = r"g\oogle-secret"
GOOGLE_SCOPE = "openid email offline_access"
GOOGLE_MD_NAME = "Google"

PUBLIC_DISCOVERY_URL = "https://public.example.org/.well-known/openid-configuration"
PUBLIC_CLIENT_ID = "public-client"
PUBLIC_MD_NAME = "A public client"

# lower-case names are not settings (Flask ignores them)
note = {"kept": ["out", 1, 2.5, None]}
