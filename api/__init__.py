"""runink.api: the gRPC API server (mTLS, authentication chain, admission, server-side apply) and
its typed async client, which has the Barn's method names so callers can use either.

    server = ApiServer(barn, ca_pem=pki.ca.cert_pem, server_pair=pki.server)
    async with Client.from_config() as client:
        await client.apply(obj, "my-manager")
"""

from runink.api._agentlogs import AgentLogServer
from runink.api._auth import (
    AllowAll,
    AuthChain,
    Authenticator,
    Authorizer,
    AuthRequest,
    ClientCertificateAuthenticator,
    Identity,
)
from runink.api._client import Client, bootstrap_node_credentials
from runink.api._config import (
    ClientConfig,
    Context,
    default_path as default_config_path,
    load as load_config,
)
from runink.api._security import SecurityConfig
from runink.api._server import ApiServer, LogSource
from runink.api._tls import ClusterPKI, KeyPair, ensure_cluster_pki, issue
from runink.api._tokens import OIDCConfig

__all__ = [
    "AgentLogServer",
    "AllowAll",
    "ApiServer",
    "AuthChain",
    "AuthRequest",
    "Authenticator",
    "Authorizer",
    "Client",
    "ClientCertificateAuthenticator",
    "ClientConfig",
    "ClusterPKI",
    "Context",
    "Identity",
    "KeyPair",
    "LogSource",
    "OIDCConfig",
    "SecurityConfig",
    "bootstrap_node_credentials",
    "default_config_path",
    "ensure_cluster_pki",
    "issue",
    "load_config",
]
