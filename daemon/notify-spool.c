/* The notifier's on-disk spool (notify.h): one file ID.json an item,
 * written atomically, read back when the daemon starts. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "notify-int.h"
#include "resync/fileio.h"
#include "resync/macro.h"

/* ---- the spool ---- */

static json_object *item_doc_refresh(struct item *it)
{
	json_object *pending = json_object_new_array(), *att = json_object_new_object();

	for (size_t i = 0; i < NOTIFY_CHANNEL_COUNT; i++) {
		if (it->pending & notify_channel_table[i].bit)
			json_object_array_add(pending,
					      json_object_new_string(notify_channel_table[i].name));
		json_object_object_add(att, notify_channel_table[i].name,
				       json_object_new_int((int)it->attempts[i]));
	}
	json_object_object_add(it->doc, "pending", pending);
	json_object_object_add(it->doc, "attempts", att);
	return it->doc;
}

/* Write it's file crash-safely (file_write_atomic()). */
int notify_spool_write(struct notify *n, struct item *it)
{
	_cleanup_free_ char *path = NULL;
	const char *s =
	    json_object_to_json_string_ext(item_doc_refresh(it), JSON_C_TO_STRING_PLAIN);

	if (asprintf(&path, "%s/%s.json", n->spool, it->id) < 0) {
		path = NULL;
		return -ENOMEM;
	}
	return file_write_atomic(path, s, strlen(s), 0600);
}

void notify_spool_remove(struct notify *n, struct item *it)
{
	_cleanup_free_ char *path = NULL;

	if (asprintf(&path, "%s/%s.json", n->spool, it->id) < 0)
		return;
	unlink(path);
	fsync_directory_of(path);
}

/* Whether a spool document's id can name its file (SPOOL/ID.json, which
 * the loader removes and the worker rewrites): all of the JSON string, 1
 * to 47 bytes of the alphabet notify.c gives ids. A hand-edited or
 * damaged file must not make "../x" a path. */
static bool spool_id_valid(json_object *doc)
{
	json_object *v;
	const char *s;
	size_t len;

	if (!json_object_object_get_ex(doc, "id", &v) || !json_object_is_type(v, json_type_string))
		return false;
	s = json_object_get_string(v);
	len = (size_t)json_object_get_string_len(v);
	return len >= 1 && len < sizeof(((struct item *)NULL)->id) &&
	       strspn(s, NOTIFY_ID_ALPHABET) == len;
}

int notify_spool_parse(const char *text, size_t len, struct item **ret)
{
	struct json_tokener *tok;
	json_object *doc, *v;
	struct item *it;

	if (len > NOTIFY_SPOOL_FILE_MAX)
		return -EBADMSG;
	tok = json_tokener_new();
	if (!tok)
		return -ENOMEM;
	/* As json_object_from_file() reads a file: what follows the
	 * object is not looked at. */
	doc = json_tokener_parse_ex(tok, text, (int)len);
	json_tokener_free(tok);
	if (!doc || !json_object_is_type(doc, json_type_object) || !spool_id_valid(doc) ||
	    !json_object_object_get_ex(doc, "payload", &v) ||
	    !json_object_is_type(v, json_type_object)) {
		json_object_put(doc);
		return -EBADMSG;
	}
	it = calloc(1, sizeof(*it));
	if (!it) {
		json_object_put(doc);
		return -ENOMEM;
	}
	it->doc = doc;
	snprintf(it->id, sizeof(it->id), "%s", jstr(doc, "id"));
	it->created = (int64_t)ju64(doc, "created");
	if (json_object_object_get_ex(doc, "pending", &v) && json_object_is_type(v, json_type_array)) {
		for (size_t i = 0; i < json_object_array_length(v); i++) {
			const char *c = json_object_get_string(json_object_array_get_idx(v, i));

			for (size_t k = 0; k < NOTIFY_CHANNEL_COUNT; k++)
				if (c && !strcmp(c, notify_channel_table[k].name))
					it->pending |= notify_channel_table[k].bit;
		}
	}
	if (json_object_object_get_ex(doc, "attempts", &v))
		for (size_t k = 0; k < NOTIFY_CHANNEL_COUNT; k++)
			it->attempts[k] = (unsigned)ju64(v, notify_channel_table[k].name);
	*ret = it;
	return 0;
}

static int spool_load_one(struct notify *n, const char *name)
{
	_cleanup_free_ char *path = NULL, *text = NULL;
	_cleanup_close_ int fd = -1;
	struct item *it;
	struct stat st;
	ssize_t len;
	int r;

	if (asprintf(&path, "%s/%s", n->spool, name) < 0) {
		path = NULL;
		return -ENOMEM;
	}
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &st) < 0)
		return -errno;
	if (st.st_size > NOTIFY_SPOOL_FILE_MAX) {
		log_printf(LOG_WARNING, "notification spool file '%s' is larger than %d bytes: ignored",
			   path, NOTIFY_SPOOL_FILE_MAX);
		return -EFBIG;
	}
	text = malloc((size_t)st.st_size + 1);
	if (!text)
		return -ENOMEM;
	len = fd_read_all(fd, text, (size_t)st.st_size);
	r = len < 0 ? -EBADMSG : notify_spool_parse(text, (size_t)len, &it);
	if (r == -ENOMEM)
		return r;
	if (r < 0) {
		log_printf(LOG_WARNING, "notification spool file '%s' is damaged: ignored", path);
		return -EBADMSG;
	}
	/* Channels no longer configured are dropped; the rest go at once. */
	it->pending &= n->channels;
	if (!it->pending) {
		notify_spool_remove(n, it);
		notify_item_free(it);
		return 0;
	}
	pthread_mutex_lock(&n->lock);
	notify_items_add(n, it);
	pthread_mutex_unlock(&n->lock);
	log_printf(LOG_INFO, "notification %s found in the spool: delivering", it->id);
	return 0;
}

int notify_spool_load(struct notify *n)
{
	DIR *d = opendir(n->spool);
	struct dirent *de;

	if (!d)
		return -errno;
	while ((de = readdir(d))) {
		size_t l = strlen(de->d_name);

		if (l > 4 && !strcmp(de->d_name + l - 4, ".tmp")) {
			/* A write that a crash interrupted: its rename never
			 * happened, so the old file (if any) is the truth. */
			unlinkat(dirfd(d), de->d_name, 0);
			continue;
		}
		if (l > 5 && !strcmp(de->d_name + l - 5, ".json"))
			spool_load_one(n, de->d_name);
	}
	closedir(d);
	return 0;
}
