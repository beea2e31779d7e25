/* etcd's v3 JSON gateway over libcurl (etcd.h). The gateway is gRPC's
 * JSON mapping: bytes fields are base64, int64 fields are strings, and
 * zero values are left out of answers (a missing "count" is 0). */
#include <curl/curl.h>
#include <errno.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "etcd.h"
#include "resync/macro.h"

enum {
	ETCD_ANSWER_MAX = 1 << 20, /* an answer longer than this is refused */
	ETCD_VALUE_MAX = 64 << 10, /* a value resync reads */
};

struct etcd {
	const struct etcd_config *cfg;
	pthread_mutex_t lock;
	size_t good;  /* the endpoint that answered last; protected by lock */
	int watch_fd; /* the watch's socket, -1 none; protected by lock */
};

static pthread_once_t etcd_curl_once = PTHREAD_ONCE_INIT;

static void etcd_curl_init(void)
{
	curl_global_init(CURL_GLOBAL_DEFAULT);
}

int etcd_new(const struct etcd_config *cfg, struct etcd **ret)
{
	struct etcd *e = calloc(1, sizeof(*e));

	if (!e)
		return -ENOMEM;
	pthread_once(&etcd_curl_once, etcd_curl_init);
	e->cfg = cfg;
	e->watch_fd = -1;
	pthread_mutex_init(&e->lock, NULL);
	*ret = e;
	return 0;
}

void etcd_free(struct etcd *e)
{
	if (!e)
		return;
	pthread_mutex_destroy(&e->lock);
	free(e);
}

const char *etcd_endpoint(struct etcd *e)
{
	size_t i;

	pthread_mutex_lock(&e->lock);
	i = e->good;
	pthread_mutex_unlock(&e->lock);
	return e->cfg->endpoints[i];
}

/* ---- base64 (OpenSSL's EVP_EncodeBlock / EVP_DecodeBlock) ---- */
static char *b64_encode(const char *s)
{
	size_t len = strlen(s);
	char *out = malloc(4 * ((len + 2) / 3) + 1);

	if (out)
		EVP_EncodeBlock((unsigned char *)out, (const unsigned char *)s, (int)len);
	return out;
}

/* Decoded into a NUL-terminated string; NULL when not base64 or too long. */
static char *b64_decode(const char *s)
{
	size_t len = strlen(s);
	unsigned char *out;
	int n;

	if (len % 4 || len / 4 * 3 > ETCD_VALUE_MAX)
		return NULL;
	out = malloc(len / 4 * 3 + 1);
	if (!out)
		return NULL;
	n = EVP_DecodeBlock(out, (const unsigned char *)s, (int)len);
	if (n < 0) {
		free(out);
		return NULL;
	}
	/* EVP_DecodeBlock counts the padding's bytes too. */
	for (size_t i = len; i > 0 && s[i - 1] == '=' && n > 0; i--)
		n--;
	/* A value written by hand may end with a newline: not part of it. */
	while (n > 0 && (out[n - 1] == '\n' || out[n - 1] == '\r' || out[n - 1] == ' ' ||
			 out[n - 1] == '\t'))
		n--;
	out[n] = 0;
	if (strlen((char *)out) != (size_t)n) { /* a NUL inside: not a value of ours */
		free(out);
		return NULL;
	}
	return (char *)out;
}

static int64_t json_int64(json_object *o, const char *key)
{
	json_object *v;

	if (!o || !json_object_object_get_ex(o, key, &v))
		return 0;
	return strtoll(json_object_get_string(v), NULL, 10);
}

/* ---- one POST ---- */
struct etcd_buf {
	char *p;
	size_t len;
};

static size_t etcd_buf_write(char *ptr, size_t size, size_t nmemb, void *arg)
{
	struct etcd_buf *b = arg;
	size_t n = size * nmemb;
	char *p;

	if (b->len + n > ETCD_ANSWER_MAX)
		return 0;
	p = realloc(b->p, b->len + n + 1);
	if (!p)
		return 0;
	memcpy(p + b->len, ptr, n);
	b->p = p;
	b->len += n;
	b->p[b->len] = 0;
	return n;
}

static CURL *etcd_curl(const struct etcd *e, const char *url, const char *body,
		       struct curl_slist *h, char *cerr)
{
	const struct etcd_config *cfg = e->cfg;
	CURL *c = curl_easy_init();

	if (!c)
		return NULL;
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
	curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
	curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
	curl_easy_setopt(c, CURLOPT_USERAGENT, "resyncd/1");
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long)cfg->timeout_ms);
	curl_easy_setopt(c, CURLOPT_ERRORBUFFER, cerr);
	curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
	if (cfg->cacert)
		curl_easy_setopt(c, CURLOPT_CAINFO, cfg->cacert);
	if (cfg->cert) {
		curl_easy_setopt(c, CURLOPT_SSLCERT, cfg->cert);
		curl_easy_setopt(c, CURLOPT_SSLKEY, cfg->key);
	}
	return c;
}

/* POST req to path on each endpoint in turn until one answers 200 with
 * JSON: 0 and *ret; -EIO with err (the last failure) when none did. */
static int etcd_call(struct etcd *e, const char *path, json_object *req, json_object **ret,
		     char *err, size_t errlen)
{
	const struct etcd_config *cfg = e->cfg;
	const char *body = json_object_to_json_string_ext(req, JSON_C_TO_STRING_PLAIN);
	struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
	size_t first;
	int r = -EIO;

	if (!h)
		return -ENOMEM;
	pthread_mutex_lock(&e->lock);
	first = e->good;
	pthread_mutex_unlock(&e->lock);
	snprintf(err, errlen, "no etcd endpoint");
	for (size_t k = 0; k < cfg->n_endpoints; k++) {
		size_t i = (first + k) % cfg->n_endpoints;
		char url[1024], cerr[CURL_ERROR_SIZE] = "";
		struct etcd_buf b = {0};
		json_object *o = NULL;
		long code = 0;
		CURLcode cr;
		CURL *c;

		snprintf(url, sizeof(url), "%s%s", cfg->endpoints[i], path);
		c = etcd_curl(e, url, body, h, cerr);
		if (!c) {
			r = -ENOMEM;
			break;
		}
		curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)cfg->timeout_ms);
		curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, etcd_buf_write);
		curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
		cr = curl_easy_perform(c);
		if (cr == CURLE_OK)
			curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
		curl_easy_cleanup(c);
		if (b.p)
			o = json_tokener_parse(b.p);
		if (cr != CURLE_OK) {
			snprintf(err, errlen, "etcd at %s: %s", cfg->endpoints[i],
				 cerr[0] ? cerr : curl_easy_strerror(cr));
		} else if (code != 200 || !json_object_is_type(o, json_type_object)) {
			json_object *m = NULL;

			if (o)
				json_object_object_get_ex(o, "message", &m);
			snprintf(err, errlen, "etcd at %s answered HTTP %ld%s%s", cfg->endpoints[i],
				 code, m ? ": " : "", m ? json_object_get_string(m) : "");
		} else {
			pthread_mutex_lock(&e->lock);
			e->good = i;
			pthread_mutex_unlock(&e->lock);
			*ret = o;
			free(b.p);
			r = 0;
			break;
		}
		json_object_put(o);
		free(b.p);
	}
	curl_slist_free_all(h);
	return r;
}

static json_object *req_key(const char *key)
{
	json_object *o = json_object_new_object();
	char *k = b64_encode(key);

	if (!o || !k) {
		json_object_put(o);
		free(k);
		return NULL;
	}
	json_object_object_add(o, "key", json_object_new_string(k));
	free(k);
	return o;
}

static void req_add_string(json_object *o, const char *name, const char *s)
{
	json_object_object_add(o, name, json_object_new_string(s));
}

static void req_add_int64(json_object *o, const char *name, int64_t v)
{
	char b[32];

	snprintf(b, sizeof(b), "%" PRId64, v);
	req_add_string(o, name, b);
}

/* kvs[0] of a range answer into *ret (value NULL: absent). */
static int etcd_kv_parse(json_object *range, struct etcd_kv *ret)
{
	json_object *kvs, *kv, *v;

	if (!json_object_object_get_ex(range, "kvs", &kvs) || !json_object_array_length(kvs))
		return 0;
	kv = json_object_array_get_idx(kvs, 0);
	if (!json_object_object_get_ex(kv, "value", &v)) {
		ret->value = strdup("");
	} else {
		ret->value = b64_decode(json_object_get_string(v));
		if (!ret->value)
			return -EBADMSG;
	}
	if (!ret->value)
		return -ENOMEM;
	ret->lease = json_int64(kv, "lease");
	return 0;
}

int etcd_get(struct etcd *e, const char *key, struct etcd_kv *ret, char *err, size_t errlen)
{
	json_object *req = req_key(key), *a = NULL, *hdr = NULL;
	struct etcd_kv kv = {0};
	int r;

	if (!req)
		return -ENOMEM;
	r = etcd_call(e, "/v3/kv/range", req, &a, err, errlen);
	json_object_put(req);
	if (r < 0)
		return r;
	r = etcd_kv_parse(a, &kv);
	if (r == -EBADMSG)
		snprintf(err, errlen, "etcd: the value of '%s' is not text", key);
	json_object_object_get_ex(a, "header", &hdr);
	kv.revision = json_int64(hdr, "revision");
	json_object_put(a);
	if (r < 0) {
		etcd_kv_release(&kv);
		return r;
	}
	*ret = kv;
	return 0;
}

void etcd_kv_release(struct etcd_kv *kv)
{
	free(kv->value);
	kv->value = NULL;
}

static json_object *req_put(const char *key, const char *value, int64_t lease)
{
	json_object *o = req_key(key);
	char *v = b64_encode(value);

	if (!o || !v) {
		json_object_put(o);
		free(v);
		return NULL;
	}
	req_add_string(o, "value", v);
	free(v);
	if (lease)
		req_add_int64(o, "lease", lease);
	return o;
}

int etcd_put(struct etcd *e, const char *key, const char *value, int64_t lease, char *err,
	     size_t errlen)
{
	json_object *req = req_put(key, value, lease), *a = NULL;
	int r;

	if (!req)
		return -ENOMEM;
	r = etcd_call(e, "/v3/kv/put", req, &a, err, errlen);
	json_object_put(req);
	json_object_put(a);
	return r;
}

int etcd_create(struct etcd *e, const char *key, const char *value, int64_t lease,
		char **ret_holder, char *err, size_t errlen)
{
	json_object *req = json_object_new_object(), *cmp = req_key(key),
		    *put = req_put(key, value, lease);
	json_object *rng = req_key(key), *a = NULL, *arr, *v, *resp, *rr;
	struct etcd_kv kv = {0};
	int r = -ENOMEM;

	if (!req || !cmp || !put || !rng)
		goto out;
	/* Compare: the key was never created (create_revision 0). */
	req_add_string(cmp, "target", "CREATE");
	req_add_string(cmp, "result", "EQUAL");
	req_add_string(cmp, "create_revision", "0");
	arr = json_object_new_array();
	json_object_array_add(arr, TAKE_PTR(cmp));
	json_object_object_add(req, "compare", arr);
	v = json_object_new_object();
	json_object_object_add(v, "request_put", TAKE_PTR(put));
	arr = json_object_new_array();
	json_object_array_add(arr, v);
	json_object_object_add(req, "success", arr);
	v = json_object_new_object();
	json_object_object_add(v, "request_range", TAKE_PTR(rng));
	arr = json_object_new_array();
	json_object_array_add(arr, v);
	json_object_object_add(req, "failure", arr);
	r = etcd_call(e, "/v3/kv/txn", req, &a, err, errlen);
	if (r < 0)
		goto out;
	if (json_object_object_get_ex(a, "succeeded", &v) && json_object_get_boolean(v)) {
		r = 0;
		goto out;
	}
	/* The key's holder, from the failure branch's range. */
	r = -EEXIST;
	if (json_object_object_get_ex(a, "responses", &resp) && json_object_array_length(resp) &&
	    json_object_object_get_ex(json_object_array_get_idx(resp, 0), "response_range", &rr) &&
	    etcd_kv_parse(rr, &kv) >= 0 && kv.value)
		*ret_holder = TAKE_PTR(kv.value);
	else
		*ret_holder = strdup("(unknown)");
out:
	json_object_put(req);
	json_object_put(cmp);
	json_object_put(put);
	json_object_put(rng);
	json_object_put(a);
	etcd_kv_release(&kv);
	return r;
}

int etcd_delete(struct etcd *e, const char *key, char *err, size_t errlen)
{
	json_object *req = req_key(key), *a = NULL;
	int r;

	if (!req)
		return -ENOMEM;
	r = etcd_call(e, "/v3/kv/deleterange", req, &a, err, errlen);
	json_object_put(req);
	json_object_put(a);
	return r;
}

int etcd_lease_grant(struct etcd *e, unsigned ttl, int64_t *ret_id, char *err, size_t errlen)
{
	json_object *req = json_object_new_object(), *a = NULL;
	int r;

	if (!req)
		return -ENOMEM;
	req_add_int64(req, "TTL", ttl);
	r = etcd_call(e, "/v3/lease/grant", req, &a, err, errlen);
	json_object_put(req);
	if (r >= 0 && !json_int64(a, "ID")) {
		snprintf(err, errlen, "etcd granted no lease");
		r = -EBADMSG;
	}
	if (r >= 0)
		*ret_id = json_int64(a, "ID");
	json_object_put(a);
	return r;
}

int etcd_lease_keepalive(struct etcd *e, int64_t id, int64_t *ret_ttl, char *err, size_t errlen)
{
	json_object *req = json_object_new_object(), *a = NULL, *res = NULL;
	int r;

	if (!req)
		return -ENOMEM;
	req_add_int64(req, "ID", id);
	r = etcd_call(e, "/v3/lease/keepalive", req, &a, err, errlen);
	json_object_put(req);
	if (r >= 0) {
		/* A stream of one answer: {"result": {..., "TTL": "n"}}; an
		 * expired lease answers without a TTL (0). */
		json_object_object_get_ex(a, "result", &res);
		*ret_ttl = json_int64(res, "TTL");
	}
	json_object_put(a);
	return r;
}

int etcd_lease_revoke(struct etcd *e, int64_t id, char *err, size_t errlen)
{
	json_object *req = json_object_new_object(), *a = NULL;
	int r;

	if (!req)
		return -ENOMEM;
	req_add_int64(req, "ID", id);
	r = etcd_call(e, "/v3/lease/revoke", req, &a, err, errlen);
	json_object_put(req);
	json_object_put(a);
	return r;
}

/* ---- watch: a stream of JSON answers on one POST ---- */
struct etcd_watch_ctx {
	json_tokener *tok;
	etcd_watch_fn *fn;
	void *arg;
	atomic_bool *stop;
	bool bad;
	bool cancelled; /* etcd cancelled the watch */
};

static void etcd_watch_event(struct etcd_watch_ctx *w, json_object *o)
{
	json_object *res, *evs;

	if (!json_object_object_get_ex(o, "result", &res))
		return;
	/* Cancelled by etcd (its start revision compacted, ...): the stream
	 * says nothing more; the caller reads the key again. */
	if (json_object_object_get_ex(res, "canceled", &evs) && json_object_get_boolean(evs)) {
		w->cancelled = true;
		return;
	}
	if (!json_object_object_get_ex(res, "events", &evs))
		return;
	for (size_t i = 0; i < json_object_array_length(evs); i++) {
		json_object *ev = json_object_array_get_idx(evs, i), *kv, *t, *v;
		bool del = json_object_object_get_ex(ev, "type", &t) &&
			   !strcmp(json_object_get_string(t), "DELETE");
		char *value = NULL;

		if (!json_object_object_get_ex(ev, "kv", &kv))
			continue;
		if (!del) {
			value = json_object_object_get_ex(kv, "value", &v)
				    ? b64_decode(json_object_get_string(v))
				    : strdup("");
			if (!value) {
				w->bad = true;
				continue;
			}
		}
		w->fn(w->arg, value, json_int64(kv, "mod_revision"));
		free(value);
	}
}

static size_t etcd_watch_write(char *ptr, size_t size, size_t nmemb, void *arg)
{
	struct etcd_watch_ctx *w = arg;
	size_t n = size * nmemb, off = 0;

	while (off < n) {
		json_object *o = json_tokener_parse_ex(w->tok, ptr + off, (int)(n - off));
		enum json_tokener_error je = json_tokener_get_error(w->tok);
		size_t used = json_tokener_get_parse_end(w->tok);

		if (je == json_tokener_continue)
			break;
		if (je != json_tokener_success) {
			w->bad = true;
			return 0;
		}
		etcd_watch_event(w, o);
		json_object_put(o);
		json_tokener_reset(w->tok);
		if (w->cancelled)
			return 0; /* ends the transfer */
		off += used ? used : n - off;
		while (off < n && (ptr[off] == '\n' || ptr[off] == '\r' || ptr[off] == ' '))
			off++;
	}
	return n;
}

static int etcd_watch_progress(void *arg, curl_off_t a, curl_off_t b, curl_off_t c, curl_off_t d)
{
	struct etcd_watch_ctx *w = arg;

	(void)a, (void)b, (void)c, (void)d;
	return atomic_load(w->stop) ? 1 : 0;
}

/* The watch's socket is known to etcd_watch_interrupt() from its
 * opening to its closing, both under the lock (never a reused number). */
static curl_socket_t etcd_watch_open(void *arg, curlsocktype purpose, struct curl_sockaddr *a)
{
	struct etcd *e = arg;
	int fd = socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);

	(void)purpose;
	if (fd < 0)
		return CURL_SOCKET_BAD;
	pthread_mutex_lock(&e->lock);
	e->watch_fd = fd;
	pthread_mutex_unlock(&e->lock);
	return fd;
}

static int etcd_watch_close(void *arg, curl_socket_t fd)
{
	struct etcd *e = arg;

	pthread_mutex_lock(&e->lock);
	if (e->watch_fd == fd)
		e->watch_fd = -1;
	close(fd);
	pthread_mutex_unlock(&e->lock);
	return 0;
}

void etcd_watch_interrupt(struct etcd *e)
{
	pthread_mutex_lock(&e->lock);
	if (e->watch_fd >= 0)
		shutdown(e->watch_fd, SHUT_RDWR);
	pthread_mutex_unlock(&e->lock);
}

int etcd_watch(struct etcd *e, const char *key, int64_t from, etcd_watch_fn *fn, void *arg,
	       atomic_bool *stop, char *err, size_t errlen)
{
	struct etcd_watch_ctx w = {.tok = json_tokener_new(), .fn = fn, .arg = arg, .stop = stop};
	json_object *req = json_object_new_object(), *cr = req_key(key);
	struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
	char url[1024], cerr[CURL_ERROR_SIZE] = "";
	CURLcode res;
	CURL *c = NULL;
	int r = -ENOMEM;

	if (!w.tok || !req || !cr || !h)
		goto out;
	req_add_int64(cr, "start_revision", from);
	json_object_object_add(req, "create_request", TAKE_PTR(cr));
	snprintf(url, sizeof(url), "%s/v3/watch", etcd_endpoint(e));
	c = etcd_curl(e, url, json_object_to_json_string_ext(req, JSON_C_TO_STRING_PLAIN), h, cerr);
	if (!c)
		goto out;
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, etcd_watch_write);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &w);
	curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
	curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, etcd_watch_progress);
	curl_easy_setopt(c, CURLOPT_XFERINFODATA, &w);
	curl_easy_setopt(c, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(c, CURLOPT_OPENSOCKETFUNCTION, etcd_watch_open);
	curl_easy_setopt(c, CURLOPT_OPENSOCKETDATA, e);
	curl_easy_setopt(c, CURLOPT_CLOSESOCKETFUNCTION, etcd_watch_close);
	curl_easy_setopt(c, CURLOPT_CLOSESOCKETDATA, e);
	/* A stop set before the socket opened is seen here. */
	res = atomic_load(stop) ? CURLE_OK : curl_easy_perform(c);
	if (atomic_load(stop)) {
		r = 0;
	} else {
		snprintf(err, errlen, "etcd watch at %s: %s", etcd_endpoint(e),
			 w.cancelled	   ? "cancelled by etcd"
			 : w.bad	   ? "an answer that is not etcd's"
			 : res == CURLE_OK ? "the stream ended"
			 : cerr[0]	   ? cerr
					   : curl_easy_strerror(res));
		r = -EIO;
	}
out:
	if (c)
		curl_easy_cleanup(c);
	curl_slist_free_all(h);
	json_object_put(req);
	json_object_put(cr);
	if (w.tok)
		json_tokener_free(w.tok);
	return r;
}
