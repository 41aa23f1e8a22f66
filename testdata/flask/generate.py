#!/usr/bin/env python3
"""Writes the Flask service's artefacts, the way it writes them, for the Go tests.

Run from the repository root:  python3 testdata/flask/generate.py
(needs the `cryptography` package; the outputs are committed, so the Go tests
need no Python.)

Outputs, in testdata/flask/:
  settings.py         a settings file in the Flask service's format (module
                      NAME = value assignments), with its TOKEN_PROVIDERS /
                      IDPn_* providers, Flask / Flask-Session / SQLAlchemy keys
  settings.json       what Python itself reads from settings.py: its
                      upper-case module globals (Flask's from_pyfile rule)
  tokenstore.db       a SQLite database with the Flask service's
                      refresh_token table (Alembic revision a07e67c00e84),
                      tokens encrypted as its crypto.CryptoTool encrypts them
  refresh_token.sql   the same rows as a PostgreSQL dump (plain SQL)
  expected.json       per row: id, user, provider, the plain refresh token,
                      and the CRYPTOKEY list (test keys only) that opens them

The keys are fixed test keys, never used anywhere else. The tokens are
Fernet tokens with random IVs, so a rerun changes the files; the Go tests
check the committed ones.
"""
import base64
import binascii
import json
import os
import runpy
import sqlite3

from cryptography.fernet import Fernet, MultiFernet

HERE = os.path.dirname(os.path.abspath(__file__))

# The Flask service's three key formats (crypto.CryptoTool._validate_key):
# 32 raw characters, 44 characters of base64, 64 of hex.
RAW_KEY = "0123456789abcdefghijklmnopqrstuv"  # 32 bytes as typed
B64_KEY = base64.b64encode(b"B" * 16 + b"b" * 16).decode()  # 44 characters
HEX_KEY = binascii.b2a_hex(bytes(range(32))).decode()  # 64 characters
# The old keys first, as in the Flask service: the first one encrypts.
CRYPTOKEY = ", ".join([RAW_KEY, B64_KEY, HEX_KEY])


def validate_key(key):
    """crypto.CryptoTool._validate_key of the Flask service, verbatim logic."""
    key = key.encode("ascii")
    if len(key) == 44:
        try:
            key = base64.b64decode(key)
        except ValueError:
            pass
    elif len(key) == 64:
        try:
            return binascii.a2b_hex(key)
        except ValueError:
            pass
    if len(key) != 32:
        raise ValueError("Encryption keys must be be 32 bytes")
    return key


def fernet_for(keys):
    return MultiFernet(Fernet(base64.urlsafe_b64encode(validate_key(k.strip()))) for k in keys.split(",") if k.strip())


SETTINGS = '''\
"""tokenstore settings, as deployed with the Flask service."""
# Flask
SECRET_KEY = b"\\xec]/\\x8a flask-cookie-key"
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

CRYPTOKEY = "%(cryptokey)s"

CORS_ORIGINS = ["https://app.example.com", 'https://other.example.com']

# Token providers
TOKEN_PROVIDERS = "tern_keycloak, Google, public"

TERN_KEYCLOAK_DISCOVERY_URL = "https://auth.tern.example/auth/realms/tern/.well-known/openid-configuration"
TERN_KEYCLOAK_CLIENT_ID = "tokenstore"
TERN_KEYCLOAK_CLIENT_SECRET = 'tern-client-secret'
TERN_KEYCLOAK_MD_NAME = "TERN Keycloak"
TERN_KEYCLOAK_MD_DESCRIPTION = 'TERN\\'s own login'

GOOGLE_DISCOVERY_URL = "https://accounts.google.com/.well-known/openid-configuration"
GOOGLE_CLIENT_ID = "1234.apps.googleusercontent.com"
GOOGLE_CLIENT_SECRET = r"g\\oogle-secret"
GOOGLE_SCOPE = "openid email offline_access"
GOOGLE_MD_NAME = "Google"

PUBLIC_DISCOVERY_URL = "https://public.example.org/.well-known/openid-configuration"
PUBLIC_CLIENT_ID = "public-client"
PUBLIC_MD_NAME = "A public client"

# lower-case names are not settings (Flask ignores them)
note = {"kept": ["out", 1, 2.5, None]}
''' % {"cryptokey": CRYPTOKEY}

ROWS = [
    # id, provider, user_id, token, expires_in, expires_at
    (1, "tern_keycloak", "alice", "rt-alice-tern", 1800, 4102444800.0),
    (2, "Google", "alice", "rt-alice-google", None, None),
    (3, "tern_keycloak", "bob", "rt-bob-tern", 0, 0.0),
    (4, "public", "carol", "rt-carol-public", None, 1893456000.5),
    (5, "retired_idp", "dave", "rt-dave-retired", None, None),
]


def main():
    with open(os.path.join(HERE, "settings.py"), "w") as f:
        f.write(SETTINGS)
    # What Flask's from_pyfile takes: the upper-case globals after running it.
    glb = runpy.run_path(os.path.join(HERE, "settings.py"))
    taken = {}
    for k, v in glb.items():
        if k.isupper():
            taken[k] = v.decode("latin-1") if isinstance(v, bytes) else v
    with open(os.path.join(HERE, "settings.json"), "w") as f:
        json.dump(taken, f, indent=1, sort_keys=True)
        f.write("\n")

    fernet = fernet_for(CRYPTOKEY)
    # A row encrypted under an older key (the second): MultiFernet decrypts
    # with any key, as after a key rotation in the Flask service.
    older = fernet_for(B64_KEY)

    path = os.path.join(HERE, "tokenstore.db")
    if os.path.exists(path):
        os.remove(path)
    db = sqlite3.connect(path)
    # Alembic revision a07e67c00e84, as SQLAlchemy emits it for SQLite.
    db.executescript("""
CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL, CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num));
INSERT INTO alembic_version VALUES ('a07e67c00e84');
CREATE TABLE refresh_token (
	id INTEGER NOT NULL,
	provider TEXT,
	token BLOB,
	expires_in INTEGER,
	expires_at FLOAT,
	user_id TEXT,
	PRIMARY KEY (id)
);
CREATE INDEX ix_refresh_token_provider ON refresh_token (provider);
CREATE INDEX ix_refresh_token_user_id ON refresh_token (user_id);
""")
    sql_rows = []
    for i, (rid, provider, user, token, expires_in, expires_at) in enumerate(ROWS):
        f = older if i == 1 else fernet
        # crypto.encrypt: Fernet.encrypt(data.encode("utf-8")), stored as
        # LargeBinary: the token's ASCII bytes.
        ct = f.encrypt(token.encode("utf-8"))
        db.execute(
            "INSERT INTO refresh_token (id, provider, token, expires_in, expires_at, user_id) VALUES (?, ?, ?, ?, ?, ?)",
            (rid, provider, ct, expires_in, expires_at, user),
        )
        lit = lambda v: "NULL" if v is None else repr(v)
        sql_rows.append(
            "INSERT INTO refresh_token (id, provider, token, expires_in, expires_at, user_id) VALUES (%d, '%s', '\\x%s', %s, %s, '%s');"
            % (rid, provider, ct.hex(), lit(expires_in), lit(expires_at), user)
        )
    db.commit()
    db.close()

    with open(os.path.join(HERE, "refresh_token.sql"), "w") as f:
        f.write("-- The Flask service's table (Alembic a07e67c00e84) in PostgreSQL, with the rows of tokenstore.db.\n")
        f.write("CREATE TABLE refresh_token (\n\tid SERIAL NOT NULL,\n\tprovider TEXT,\n\ttoken BYTEA,\n\texpires_in INTEGER,\n\texpires_at FLOAT,\n\tuser_id TEXT,\n\tPRIMARY KEY (id)\n);\n")
        f.write("CREATE INDEX ix_refresh_token_provider ON refresh_token (provider);\n")
        f.write("CREATE INDEX ix_refresh_token_user_id ON refresh_token (user_id);\n")
        f.write("\n".join(sql_rows) + "\n")

    with open(os.path.join(HERE, "expected.json"), "w") as f:
        json.dump(
            {
                "cryptokey": CRYPTOKEY,
                "rows": [
                    {"id": r[0], "provider": r[1], "user_id": r[2], "token": r[3], "expires_at": r[5]}
                    for r in ROWS
                ],
            },
            f,
            indent=1,
        )
        f.write("\n")


if __name__ == "__main__":
    main()
