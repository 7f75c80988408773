// A real OpenID Connect provider for the single sign-on tests (tests/server/test_oidc.py):
// panva/oidc-provider with its development login/consent pages (any login name is accepted,
// the password is ignored; the login name picks the account in OIDC_ACCOUNTS_FILE).
//
// Environment:
//   OIDC_PORT                       port on 127.0.0.1 (the issuer is http://127.0.0.1:PORT)
//   OIDC_CLIENT_ID / _SECRET        the one client (client_secret_basic, PKCE required)
//   OIDC_REDIRECT_URIS              comma-separated redirect URIs of the client
//   OIDC_POST_LOGOUT_REDIRECT_URIS  comma-separated post-logout redirect URIs
//   OIDC_JWKS_FILE                  {"keys": [private RSA JWK with kid]}: the signing key
//   OIDC_ACCOUNTS_FILE              {"<login>": {email, preferred_username, name, groups, ...}},
//                                   read again at every findAccount, so a test can change it
//   OIDC_TOKEN_PROXY                optional base URL: the discovery document advertises the
//                                   token endpoint there (a test proxy that forwards to us)
import fs from 'node:fs';

import Provider from 'oidc-provider';

const env = (name, fallback) => {
  const value = process.env[name] ?? fallback;
  if (value === undefined) {
    console.error(`provider.js: ${name} is not set`);
    process.exit(2);
  }
  return value;
};
const list = (value) => value.split(',').map((s) => s.trim()).filter(Boolean);

const port = Number(env('OIDC_PORT'));
const issuer = `http://127.0.0.1:${port}`;
const accountsFile = env('OIDC_ACCOUNTS_FILE');
const tokenProxy = process.env.OIDC_TOKEN_PROXY || '';

function accounts() {
  return JSON.parse(fs.readFileSync(accountsFile, 'utf8'));
}

const configuration = {
  clients: [{
    client_id: env('OIDC_CLIENT_ID'),
    client_secret: env('OIDC_CLIENT_SECRET'),
    application_type: 'web',
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
    redirect_uris: list(env('OIDC_REDIRECT_URIS')),
    post_logout_redirect_uris: list(env('OIDC_POST_LOGOUT_REDIRECT_URIS', '')),
  }],
  pkce: { required: () => true },
  jwks: JSON.parse(fs.readFileSync(env('OIDC_JWKS_FILE'), 'utf8')),
  cookies: { keys: ['runyard-tests-provider-cookie-key'] },
  scopes: ['openid', 'email', 'profile', 'groups'],
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name', 'preferred_username'],
    groups: ['groups'],
  },
  features: {
    devInteractions: { enabled: true },
    rpInitiatedLogout: { enabled: true },
  },
  async findAccount(ctx, id) {
    const account = accounts()[id];
    if (!account) {
      return undefined;
    }
    return {
      accountId: id,
      async claims() {
        return { ...account, sub: id };
      },
    };
  },
};

const provider = new Provider(issuer, configuration);

if (tokenProxy) {
  provider.use(async (ctx, next) => {
    await next();
    if (ctx.path === '/.well-known/openid-configuration' && ctx.body && typeof ctx.body === 'object') {
      ctx.body.token_endpoint = `${tokenProxy.replace(/\/$/, '')}/token`;
    }
  });
}

const server = provider.listen(port, '127.0.0.1', () => {
  console.log(`oidc-provider listening on ${issuer}`);
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => server.close(() => process.exit(0)));
}
