/* The notifier's webhook (notify.h): the payload as a JSON POST through
 * libcurl; any 2xx answer is delivery. */
#include <curl/curl.h>
#include <errno.h>
#include <json-c/json.h>
#include <stdio.h>
#include <string.h>

#include "notify-int.h"

static size_t discard(char *ptr, size_t size, size_t nmemb, void *arg)
{
	(void)ptr;
	(void)arg;
	return size * nmemb;
}

int notify_webhook_send(struct notify *n, const json_object *p, char *err, size_t errlen)
{
	const char *body = json_object_to_json_string_ext((json_object *)p, JSON_C_TO_STRING_PLAIN);
	struct curl_slist *h = NULL, *t;
	char cerr[CURL_ERROR_SIZE] = "";
	long code = 0;
	CURLcode cr;
	CURL *c;

	t = curl_slist_append(h, "Content-Type: application/json");
	if (!t)
		return -ENOMEM;
	h = t;
	c = curl_easy_init();
	if (!c) {
		curl_slist_free_all(h);
		return -ENOMEM;
	}
	curl_easy_setopt(c, CURLOPT_URL, n->cfg->notify_webhook);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
	curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
	curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
	curl_easy_setopt(c, CURLOPT_USERAGENT, "resyncd/" "1");
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, (long)NOTIFY_CONNECT_TIMEOUT_S);
	curl_easy_setopt(c, CURLOPT_TIMEOUT, (long)NOTIFY_TRANSFER_TIMEOUT_S);
	curl_easy_setopt(c, CURLOPT_ERRORBUFFER, cerr);
	notify_curl_stop_set(c, n);
	cr = curl_easy_perform(c);
	if (cr == CURLE_OK)
		curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
	curl_easy_cleanup(c);
	curl_slist_free_all(h);
	if (cr != CURLE_OK) {
		snprintf(err, errlen, "%s: %s", n->cfg->notify_webhook,
			 cerr[0] ? cerr : curl_easy_strerror(cr));
		return -EIO;
	}
	if (code < 200 || code > 299) {
		snprintf(err, errlen, "%s answered HTTP %ld", n->cfg->notify_webhook, code);
		return -EIO;
	}
	return 0;
}
