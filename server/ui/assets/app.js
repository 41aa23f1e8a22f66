// tokenstore page. Plain JavaScript over the JSON API with the session
// cookie; no framework, no build step. Text goes into the DOM through
// textContent only, never parsed as markup: provider metadata and errors
// are data.
'use strict';
(() => {
  const $ = (id) => document.getElementById(id);
  const here = location.origin + location.pathname;
  let providerNames = {};

  async function api(method, url) {
    let res;
    try {
      res = await fetch(url, { method, credentials: 'same-origin', cache: 'no-store', headers: { Accept: 'application/json' } });
    } catch (e) {
      return { ok: false, status: 0, body: { message: 'tokenstore could not be reached; check that it is running.' } };
    }
    let body = null;
    try { body = await res.json(); } catch (e) { /* not JSON: described below */ }
    return { ok: res.ok, status: res.status, body };
  }

  // sentence turns an API error answer into something a person can read.
  function sentence(r, what) {
    if (r.body && typeof r.body.message === 'string' && r.body.message) return r.body.message;
    if (r.status === 0) return 'tokenstore could not be reached; check that it is running.';
    return `${what} failed: the server answered ${r.status}.`;
  }

  // providerErrors are the OAuth2 error codes a provider (or the login
  // provider) may send back, as sentences; {p} is the provider's name.
  const providerErrors = {
    access_denied: '{p} reported that access was declined, so nothing changed.',
    invalid_scope: '{p} does not offer the permissions tokenstore asked for; the provider configuration needs fixing.',
    invalid_client: '{p} did not accept tokenstore\'s client id or secret; the provider configuration needs fixing.',
    unauthorized_client: '{p} does not allow tokenstore\'s client to do this; the provider configuration needs fixing.',
    invalid_grant: '{p} no longer accepts the authorization; connect the account again.',
    invalid_request: '{p} rejected the request as malformed; try again, and report it if it keeps happening.',
    invalid_response: '{p} answered without an authorization code; try again.',
    server_error: '{p} had a problem on its side; try again in a moment.',
    temporarily_unavailable: '{p} is temporarily unavailable; try again in a moment.',
    provider_unavailable: '{p} could not be reached; try again in a moment.',
    login_required: '{p} needs you to sign in there again.',
    consent_required: '{p} needs your consent again.',
    interaction_required: '{p} needs you to do something there first; try again.',
  };
  function providerError(code, name) {
    const tpl = providerErrors[code] || '{p} answered with an error ({code}).';
    return tpl.replace('{p}', name).replace('{code}', code);
  }

  function notice(text, isError) {
    const n = $('notice');
    n.textContent = text;
    n.classList.toggle('notice-error', !!isError);
    n.setAttribute('role', isError ? 'alert' : 'status');
    n.hidden = !text;
  }

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function plural(n, unit) { return `${n} ${unit}${n === 1 ? '' : 's'}`; }
  function duration(seconds) {
    const s = Math.abs(seconds);
    if (s < 90) return plural(Math.round(s), 'second');
    if (s < 90 * 60) return plural(Math.round(s / 60), 'minute');
    if (s < 36 * 3600) return plural(Math.round(s / 3600), 'hour');
    return plural(Math.round(s / 86400), 'day');
  }
  function when(unix) {
    const d = unix - Date.now() / 1000;
    if (Math.abs(d) < 5) return 'just now';
    return d >= 0 ? `in ${duration(d)}` : `${duration(d)} ago`;
  }

  function safeURL(u) {
    try {
      const x = new URL(u, location.href);
      return (x.protocol === 'https:' || x.protocol === 'http:') ? x.href : null;
    } catch (e) { return null; }
  }

  // decodeJWT returns the payload of a JWT, or null for an opaque token.
  // Display only: the signature is the API client's business, not the page's.
  function decodeJWT(tok) {
    const parts = (tok || '').split('.');
    if (parts.length !== 3) return null;
    try {
      const b64 = parts[1].replace(/-/g, '+').replace(/_/g, '/');
      const bin = atob(b64 + '='.repeat((4 - b64.length % 4) % 4));
      const bytes = Uint8Array.from(bin, (c) => c.charCodeAt(0));
      const v = JSON.parse(new TextDecoder().decode(bytes));
      return v && typeof v === 'object' ? v : null;
    } catch (e) { return null; }
  }

  function claimValue(k, v) {
    if ((k === 'exp' || k === 'iat' || k === 'nbf' || k === 'auth_time') && typeof v === 'number') {
      return `${new Date(v * 1000).toLocaleString()} (${when(v)})`;
    }
    return typeof v === 'string' ? v : JSON.stringify(v);
  }

  async function fetchToken(p, card, btn) {
    btn.disabled = true;
    const r = await api('GET', p.actions.token);
    btn.disabled = false;
    const box = card.querySelector('.token');
    const claims = card.querySelector('.claims');
    claims.replaceChildren();
    if (!r.ok) {
      box.hidden = true;
      showCardError(card, sentence(r, 'Getting an access token'));
      if (r.body && r.body.error === 'reauthorization_required') load();
      return;
    }
    showCardError(card, '');
    const t = r.body;
    const meta = [];
    if (t.token_type) meta.push(t.token_type);
    if (typeof t.expires_at === 'number') meta.push(`expires ${when(t.expires_at)}`);
    else meta.push('no expiry given');
    card.querySelector('.token-meta').textContent = meta.join(' · ');
    const payload = decodeJWT(t.access_token);
    // The token itself stays out of the page; its claims say what it is.
    card.querySelector('.token-note').textContent = payload
      ? 'A fresh access token was issued. Its claims (the token itself is not shown):'
      : 'A fresh access token was issued. It is opaque (not a JWT), so it carries no claims to show.';
    if (payload) {
      for (const [k, v] of Object.entries(payload)) {
        claims.append(el('dt', '', k), el('dd', '', claimValue(k, v)));
      }
    }
    if (t.scope && !(payload && payload.scope)) claims.append(el('dt', '', 'scope'), el('dd', '', t.scope));
    box.hidden = false;
  }

  function showCardError(card, text) {
    let e = card.querySelector('.error');
    if (!text) { if (e) e.remove(); return; }
    if (!e) {
      e = el('p', 'error');
      e.setAttribute('role', 'alert');
      card.querySelector('.actions').before(e);
    }
    e.textContent = text;
  }

  async function disconnect(p, name, btn) {
    btn.disabled = true;
    const r = await api('POST', p.actions.revoke);
    btn.disabled = false;
    if (!r.ok) { notice(sentence(r, `Disconnecting ${name}`), true); return; }
    let msg = `${name} is disconnected.`;
    if (r.body && r.body.provider_error) msg += ` ${name} could not confirm the revocation (${r.body.provider_error}); tokenstore forgot the authorization anyway.`;
    notice(msg, false);
    await load();
  }

  function authorizeLink(p, label, primary) {
    const a = el('a', primary ? 'btn btn-primary' : 'btn', label);
    const u = new URL(p.actions.authorize, location.href);
    u.searchParams.set('return_url', here);
    a.href = u.href;
    a.dataset.action = label.toLowerCase();
    return a;
  }

  function renderProvider(p) {
    const tpl = $('provider-tpl').content.firstElementChild.cloneNode(true);
    const md = p.metadata || {};
    const name = md.name || p.provider;
    providerNames[p.provider] = name;
    tpl.dataset.provider = p.provider;
    tpl.dataset.state = p.state;
    const logo = tpl.querySelector('.logo');
    logo.src = safeURL(md.logo) || safeURL(md.icon) || '/ui/img/provider.svg';
    logo.addEventListener('error', () => { logo.src = '/ui/img/provider.svg'; }, { once: true });
    const h = tpl.querySelector('.name');
    const link = safeURL(md.url);
    if (link) {
      const a = el('a', '', name);
      a.href = link; a.rel = 'noopener noreferrer'; a.target = '_blank';
      h.append(a);
    } else {
      h.textContent = name;
    }
    tpl.querySelector('.desc').textContent = md.description || '';
    const badge = tpl.querySelector('.state');
    const actions = tpl.querySelector('.actions');
    const expiry = tpl.querySelector('.expiry');
    if (p.state === 'active') {
      badge.textContent = 'Active'; badge.classList.add('badge-active');
      if (typeof p.expires_at === 'number') {
        expiry.textContent = p.expires_at > Date.now() / 1000
          ? `Current access token expires ${when(p.expires_at)}.`
          : `Last access token expired ${when(p.expires_at)}; the next request refreshes it.`;
      }
      const get = el('button', 'btn btn-primary', 'Get access token');
      get.type = 'button'; get.dataset.action = 'token';
      get.addEventListener('click', () => fetchToken(p, tpl, get));
      actions.append(get, authorizeLink(p, 'Reconnect', false));
    } else if (p.state === 'needs_reauth') {
      badge.textContent = 'Needs re-authorization'; badge.classList.add('badge-reauth');
      expiry.textContent = `${name} no longer accepts the stored authorization. Reconnect to keep your apps working.`;
      actions.append(authorizeLink(p, 'Reconnect', true));
    } else {
      badge.textContent = 'Not connected'; badge.classList.add('badge-off');
      actions.append(authorizeLink(p, 'Connect', true));
    }
    if (p.state !== 'not_linked') {
      const d = el('button', 'btn btn-danger', 'Disconnect');
      d.type = 'button'; d.dataset.action = 'disconnect';
      d.addEventListener('click', () => disconnect(p, name, d));
      actions.append(d);
    }
    return tpl;
  }

  function renderGrant(g) {
    const li = el('li', 'grant card');
    li.dataset.grant = String(g.id);
    const main = el('div', 'grant-main');
    const sa = g.service_account || {};
    main.append(el('strong', '', `${sa.namespace || '?'}/${sa.name || '?'}`));
    const parts = [`may get your ${providerNames[g.provider] || g.provider} tokens`];
    if (g.revoked_at) parts.push(`revoked ${when(Date.parse(g.revoked_at) / 1000)}`);
    else if (g.expires_at) parts.push(`${Date.parse(g.expires_at) > Date.now() ? 'expires' : 'expired'} ${when(Date.parse(g.expires_at) / 1000)}`);
    else parts.push('no end date');
    main.append(el('p', 'muted', parts.join(' · ')));
    li.append(main);
    const usable = !g.revoked_at && !(g.expires_at && Date.parse(g.expires_at) <= Date.now());
    const badge = el('span', 'badge ' + (usable ? 'badge-active' : 'badge-off'), g.revoked_at ? 'Revoked' : usable ? 'Active' : 'Expired');
    li.append(badge);
    if (!g.revoked_at) {
      const b = el('button', 'btn btn-danger', 'Revoke');
      b.type = 'button'; b.dataset.action = 'revoke-grant';
      b.addEventListener('click', async () => {
        b.disabled = true;
        const r = await api('DELETE', `/api/v1.0/grants/${encodeURIComponent(g.id)}`);
        b.disabled = false;
        if (!r.ok) { notice(sentence(r, 'Revoking the grant'), true); return; }
        notice(`The grant to ${sa.namespace}/${sa.name} is revoked.`, false);
        loadGrants();
      });
      li.append(b);
    }
    return li;
  }

  async function loadGrants() {
    const r = await api('GET', '/api/v1.0/grants');
    // A server without the grants API (404) shows no section at all.
    if (r.status === 404) { $('grants').hidden = true; return; }
    $('grants').hidden = false;
    const list = $('grant-list');
    list.replaceChildren();
    if (!r.ok || !Array.isArray(r.body)) {
      list.append(el('li', 'notice notice-error', sentence(r, 'Listing your grants')));
      return;
    }
    for (const g of r.body) list.append(renderGrant(g));
    $('grants-empty').hidden = r.body.length > 0;
  }

  async function load() {
    const me = await api('GET', '/api/whoami');
    // Not signed in: 403, as the Flask service answered (401 is a refused
    // bearer token, which the page never sends).
    if (me.status === 403 || me.status === 401) {
      $('who').hidden = true; $('accounts').hidden = true; $('grants').hidden = true;
      const u = new URL('/api/oidc/login', location.href);
      u.searchParams.set('return_url', here);
      $('signin').href = u.href;
      $('signed-out').hidden = false;
      return;
    }
    if (!me.ok) { notice(sentence(me, 'Loading your identity'), true); return; }
    $('signed-out').hidden = true;
    $('who').hidden = false;
    $('who-name').textContent = me.body.name || me.body.email || me.body.sub || me.body.user_id;
    $('who-name').title = me.body.email || '';
    const r = await api('GET', '/api/v1.0/authorizations');
    $('accounts').hidden = false;
    const list = $('providers');
    if (!r.ok || !Array.isArray(r.body)) { notice(sentence(r, 'Listing the providers'), true); return; }
    providerNames = {};
    list.replaceChildren(...r.body.map(renderProvider));
    $('providers-empty').hidden = r.body.length > 0;
    document.body.dataset.loaded = 'true';
    await loadGrants();
  }

  // An OAuth2 error carried back by a redirect (?error=...&provider=...) is
  // shown once as a sentence, then removed from the address bar.
  function takeRedirectError() {
    const q = new URLSearchParams(location.search);
    const code = q.get('error');
    if (!code) return null;
    const provider = q.get('provider');
    history.replaceState(null, '', location.pathname);
    return { code, provider };
  }

  document.addEventListener('DOMContentLoaded', async () => {
    const redirectError = takeRedirectError();
    $('signout').addEventListener('click', async () => {
      const r = await api('POST', '/api/oidc/logout');
      if (!r.ok) { notice(sentence(r, 'Signing out'), true); return; }
      notice('You are signed out.', false);
      await load();
    });
    await load();
    if (redirectError) {
      const name = redirectError.provider ? (providerNames[redirectError.provider] || redirectError.provider) : 'The sign-in provider';
      notice(providerError(redirectError.code, name), true);
    }
  });
})();
