/* Fuzz target for the notification spool's loader: the input is one
 * spool file (SPOOL/ID.json), parsed by notify_spool_parse() as
 * notify_spool_load() does at start. Checked:
 *   - a refusal is -EBADMSG;
 *   - an item taken has a document with an object "payload", and an id
 *     that can name its file again (the loader removes and rewrites
 *     SPOOL/ID.json): the document's whole id, 1 to 47 bytes of the
 *     alphabet notify.c gives ids, nothing else;
 *   - its pending channels are known ones;
 *   - its document printed again (as notify_spool_write() does) parses
 *     to the same item. */
#include <errno.h>
#include <json-c/json.h>
#include <stdint.h>
#include <string.h>

#include "fuzz.h"
#include "notify-int.h"

static const char id_alphabet[] =
    "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-_";

static void check_item(const struct item *it)
{
	struct json_object *v;
	size_t len = strlen(it->id);
	unsigned all = 0;

	FUZZ_CHECK(json_object_is_type(it->doc, json_type_object));
	FUZZ_CHECK(json_object_object_get_ex(it->doc, "payload", &v) &&
		   json_object_is_type(v, json_type_object));
	FUZZ_CHECK(json_object_object_get_ex(it->doc, "id", &v) &&
		   json_object_is_type(v, json_type_string));
	FUZZ_CHECK(len >= 1 && len < sizeof(it->id));
	FUZZ_CHECK((size_t)json_object_get_string_len(v) == len &&
		   !memcmp(json_object_get_string(v), it->id, len));
	FUZZ_CHECK(strspn(it->id, id_alphabet) == len);
	for (size_t k = 0; k < NOTIFY_CHANNEL_COUNT; k++)
		all |= notify_channel_table[k].bit;
	FUZZ_CHECK(!(it->pending & ~all));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct item *it = NULL, *again = NULL;
	const char *text;
	int r;

	r = notify_spool_parse((const char *)data, size, &it);
	FUZZ_CHECK(r == 0 || r == -EBADMSG);
	if (r < 0)
		return 0;
	check_item(it);
	text = json_object_to_json_string_ext(it->doc, JSON_C_TO_STRING_PLAIN);
	FUZZ_CHECK(notify_spool_parse(text, strlen(text), &again) == 0);
	FUZZ_CHECK(!strcmp(again->id, it->id) && again->created == it->created);
	FUZZ_CHECK(again->pending == it->pending);
	FUZZ_CHECK(!memcmp(again->attempts, it->attempts, sizeof(it->attempts)));
	notify_item_free(again);
	notify_item_free(it);
	return 0;
}
