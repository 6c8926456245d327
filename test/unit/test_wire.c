/*
 * Unit tests for lib/wire: encoding, decoding, authentication, replay window.
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <float.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>
#include <sodium.h>
#include <sys/wait.h>
#include <unistd.h>

#include "wire/wire.h"

static const uint8_t key_a[WIRE_KEY_BYTES] = "0123456789abcdef0123456789abcde";
static const uint8_t key_b[WIRE_KEY_BYTES] = "0123456789abcdef0123456789abcdX";

static struct wire_codec plain_codec(void)
{
	struct wire_codec c = {.key = NULL, .max_datagram = 1400, .max_msgs = 64, .max_string = 256};
	return c;
}

static struct wire_codec keyed_codec(const uint8_t *key)
{
	struct wire_codec c = plain_codec();
	c.key = key;
	return c;
}

static struct wire_env env_of(const char *from, uint64_t boot, uint64_t seq)
{
	struct wire_env e = {.legacy = false, .from = from, .boot = boot, .seq = seq};
	return e;
}

static struct wire_msg io_msg(enum wire_op op, const char *io)
{
	struct wire_msg m = {.type = WIRE_T_IO, .op = op, .io = io};
	return m;
}

/* Encodes msgs into one datagram; the text stays in w until freed. */
static void encode(struct wire_writer *w, const struct wire_codec *c, const struct wire_env *env,
                   const struct wire_msg *msgs, size_t n, const void **out, size_t *len)
{
	wire__writer_init(w, c);
	assert_int_equal(wire__begin(w, env), 0);
	for (size_t i = 0; i < n; i++)
		assert_int_equal(wire__add(w, &msgs[i]), 0);
	assert_int_equal(w->n_msgs, n);
	assert_int_equal(wire__finish(w, out, len), 0);
	assert_true(*len <= c->max_datagram);
}

/* Decodes a text datagram; returns wire__decode()'s result. */
static int decode_text(const struct wire_codec *c, const char *text, struct wire_datagram *dg,
                       tsync_reject *rej)
{
	return wire__decode(c, text, strlen(text), dg, rej);
}

/* Decodes text that must fail with the given reason. */
static void expect_reject(const struct wire_codec *c, const char *text, tsync_reject want)
{
	struct wire_datagram dg;
	tsync_reject rej = TSYNC_REJ_COUNT;
	int r = decode_text(c, text, &dg, &rej);

	if (r == 0 || rej != want)
		fail_msg("%s: got %d/%s, want %s", text, r, tsync_reject_name(rej), tsync_reject_name(want));
	assert_null(dg.root);
	assert_null(dg.msgs);
	wire__datagram_release(&dg);
}

/* Decodes text that must pass, with one message that must be bad for `want`. */
static void expect_bad_msg(const char *msg_text, tsync_reject want)
{
	struct wire_codec c = plain_codec();
	struct wire_datagram dg;
	tsync_reject rej;
	char text[1024];

	snprintf(text, sizeof(text),
	         "{\"v\":1,\"from\":\"a\",\"boot\":1,\"seq\":1,\"msgs\":["
	         "{\"type\":\"io\",\"cmd\":\"ask\",\"io\":\"x\"},%s,"
	         "{\"type\":\"cmd\",\"role\":\"r\",\"cmd\":\"c\"}]}",
	         msg_text);
	if (decode_text(&c, text, &dg, &rej) != 0)
		fail_msg("%s: datagram rejected (%s)", msg_text, tsync_reject_name(rej));
	assert_int_equal(dg.n_msgs, 3);
	assert_false(dg.msgs[0].bad);
	assert_false(dg.msgs[2].bad);
	if (!dg.msgs[1].bad || dg.msgs[1].reject != want)
		fail_msg("%s: bad=%d reject=%s, want %s", msg_text, dg.msgs[1].bad,
		         tsync_reject_name(dg.msgs[1].reject), tsync_reject_name(want));
	wire__datagram_release(&dg);
}

/* ------------------------------------------------------------------ round trips */

static void test_roundtrip_io(void **state)
{
	struct wire_codec c = keyed_codec(key_a);
	struct wire_env env = env_of("PI-Light", 7, 42);
	struct wire_msg m[6];
	struct wire_writer w;
	struct wire_datagram dg;
	tsync_reject rej;
	const void *out;
	size_t len;

	m[0] = io_msg(WIRE_OP_SET, "is_armed");
	m[0].has_val = true;
	m[0].val = tsync_int(1);
	m[0].has_ver = true;
	m[0].ver = 12;
	m[0].has_id = true;
	m[0].id = 3;
	m[1] = io_msg(WIRE_OP_REPLY, "mode");
	m[1].has_val = true;
	m[1].val = tsync_string("away");
	m[1].has_ver = true;
	m[1].ver = 0;
	m[1].has_re = true;
	m[1].re = 3;
	m[1].err = "err_ip_in_val";
	m[2] = io_msg(WIRE_OP_ASK, "temp");
	m[2].has_id = true;
	m[2].id = 8;
	m[3] = io_msg(WIRE_OP_PULSE, "door");
	m[3].has_val = true;
	m[3].val = tsync_bool(true);
	m[3].ms = 500;
	m[3].has_id = true;
	m[3].id = 9;
	m[4] = io_msg(WIRE_OP_REPLY_PULSE, "door");
	m[4].has_re = true;
	m[4].re = 9;
	m[4].err = "err_ip_in_refused";
	m[5] = io_msg(WIRE_OP_SET, "setpoint");
	m[5].has_val = true;
	m[5].val = tsync_float(21.5);

	env.to_boot = 5;
	env.re = 41;
	encode(&w, &c, &env, m, 6, &out, &len);
	assert_int_equal(wire__decode(&c, out, len, &dg, &rej), 0);
	assert_false(dg.env.legacy);
	assert_string_equal(dg.env.from, "PI-Light");
	assert_int_equal(dg.env.boot, 7);
	assert_int_equal(dg.env.seq, 42);
	assert_int_equal(dg.env.to_boot, 5);
	assert_int_equal(dg.env.re, 41);
	assert_int_equal(dg.n_msgs, 6);
	for (size_t i = 0; i < 6; i++) {
		assert_false(dg.msgs[i].bad);
		assert_int_equal(dg.msgs[i].type, WIRE_T_IO);
		assert_string_equal(dg.msgs[i].type_name, "io");
		assert_int_equal(dg.msgs[i].op, m[i].op);
		assert_string_equal(dg.msgs[i].io, m[i].io);
		assert_int_equal(dg.msgs[i].has_val, m[i].has_val);
		assert_int_equal(dg.msgs[i].has_ver, m[i].has_ver);
		assert_int_equal(dg.msgs[i].ver, m[i].ver);
		assert_int_equal(dg.msgs[i].has_id, m[i].has_id);
		assert_int_equal(dg.msgs[i].id, m[i].id);
		assert_int_equal(dg.msgs[i].has_re, m[i].has_re);
		assert_int_equal(dg.msgs[i].re, m[i].re);
		assert_int_equal(dg.msgs[i].ms, m[i].ms);
		if (m[i].err)
			assert_string_equal(dg.msgs[i].err, m[i].err);
		else
			assert_null(dg.msgs[i].err);
		/* io messages carry no jansson object: nothing reads it (wire.h). */
		assert_null(dg.msgs[i].obj);
	}
	assert_int_equal(dg.msgs[0].val.type, TSYNC_TYPE_INT);
	assert_int_equal(dg.msgs[0].val.u.i, 1);
	assert_int_equal(dg.msgs[1].val.type, TSYNC_TYPE_STRING);
	assert_string_equal(dg.msgs[1].val.u.s, "away");
	/* A bool travels as 1/0, as in the seed: it comes back as an int. */
	assert_int_equal(dg.msgs[3].val.type, TSYNC_TYPE_INT);
	assert_int_equal(dg.msgs[3].val.u.i, 1);
	assert_int_equal(dg.msgs[5].val.type, TSYNC_TYPE_FLOAT);
	assert_true(dg.msgs[5].val.u.f == 21.5);
	wire__datagram_release(&dg);
	wire__writer_free(&w);
}

static void test_roundtrip_cmd_cum_other(void **state)
{
	struct wire_codec c = plain_codec();
	struct wire_env env = env_of("deployer", 1, 1);
	struct wire_msg m[6];
	struct wire_writer w;
	struct wire_datagram dg;
	tsync_reject rej;
	const void *out;
	size_t len;
	json_t *o;

	memset(m, 0, sizeof(m));
	m[0].type = WIRE_T_CMD;
	m[0].role = "cmd_do";
	m[0].cmd = "version";
	m[0].body = "{\"kwargs\":{\"with_email\":true}}";
	m[0].has_id = true;
	m[0].id = 8;
	m[1].type = WIRE_T_CMD;
	m[1].role = "cmd_do";
	m[1].cmd = "version";
	m[1].has_re = true;
	m[1].re = 8;
	m[1].res = "\"0.1.0\"";
	m[1].body = "{ }";
	m[2].type = WIRE_T_CUM;
	m[2].io = "is_alarm";
	m[2].has_id = true;
	m[2].id = 9;
	m[3].type = WIRE_T_CUM;
	m[3].has_re = true;
	m[3].re = 9;
	m[3].res = "{\"on\":3,\"secs\":[1,2.5]}";
	m[4].type = WIRE_T_CLIM;
	m[5].type = WIRE_T_OTHER;
	m[5].type_name = "connection_status";
	m[5].body = "{\"up\":[\"a\",\"b\"]}";
	m[5].has_val = true;
	m[5].val = tsync_string("x");

	encode(&w, &c, &env, m, 6, &out, &len);
	assert_string_equal(out, "{\"v\":1,\"from\":\"deployer\",\"boot\":1,\"seq\":1,\"msgs\":["
	                         "{\"type\":\"cmd\",\"role\":\"cmd_do\",\"cmd\":\"version\",\"id\":8,"
	                         "\"kwargs\":{\"with_email\":true}},"
	                         "{\"type\":\"cmd\",\"role\":\"cmd_do\",\"cmd\":\"version\",\"re\":8,"
	                         "\"res\":\"0.1.0\"},"
	                         "{\"type\":\"cum\",\"fld\":\"is_alarm\",\"id\":9},"
	                         "{\"type\":\"cum\",\"re\":9,\"res\":{\"on\":3,\"secs\":[1,2.5]}},"
	                         "{\"type\":\"clim\"},"
	                         "{\"type\":\"connection_status\",\"val\":\"x\",\"up\":[\"a\",\"b\"]}]}");
	assert_int_equal(wire__decode(&c, out, len, &dg, &rej), 0);
	assert_int_equal(dg.n_msgs, 6);
	for (size_t i = 0; i < 6; i++)
		assert_false(dg.msgs[i].bad);

	assert_int_equal(dg.msgs[0].type, WIRE_T_CMD);
	assert_string_equal(dg.msgs[0].role, "cmd_do");
	assert_string_equal(dg.msgs[0].cmd, "version");
	assert_true(dg.msgs[0].has_id);
	assert_int_equal(dg.msgs[0].id, 8);
	o = json_object_get(json_object_get(dg.msgs[0].obj, "kwargs"), "with_email");
	assert_true(json_is_true(o));

	assert_true(dg.msgs[1].has_re);
	assert_int_equal(dg.msgs[1].re, 8);
	assert_string_equal(json_string_value(json_object_get(dg.msgs[1].obj, "res")), "0.1.0");

	assert_int_equal(dg.msgs[2].type, WIRE_T_CUM);
	assert_string_equal(dg.msgs[2].type_name, "cum");
	assert_string_equal(dg.msgs[2].io, "is_alarm");
	assert_int_equal(dg.msgs[2].id, 9);
	assert_null(dg.msgs[3].io);
	assert_int_equal(json_integer_value(json_object_get(json_object_get(dg.msgs[3].obj, "res"), "on")),
	                 3);

	assert_int_equal(dg.msgs[4].type, WIRE_T_CLIM);
	assert_string_equal(dg.msgs[4].type_name, "clim");
	assert_false(dg.msgs[4].has_id);

	assert_int_equal(dg.msgs[5].type, WIRE_T_OTHER);
	assert_string_equal(dg.msgs[5].type_name, "connection_status");
	assert_string_equal(dg.msgs[5].val.u.s, "x");
	assert_int_equal(json_array_size(json_object_get(dg.msgs[5].obj, "up")), 2);
	wire__datagram_release(&dg);
	wire__writer_free(&w);
}

static void test_envelope_text_and_legacy(void **state)
{
	struct wire_codec c = plain_codec();
	struct wire_env env = env_of("a", 3, 4);
	struct wire_msg m = io_msg(WIRE_OP_SET, "is_armed");
	struct wire_writer w;
	struct wire_datagram dg;
	tsync_reject rej;
	const void *out;
	size_t len;

	m.has_val = true;
	m.val = tsync_int(1);
	/* to_boot and re are left out when 0. */
	encode(&w, &c, &env, &m, 1, &out, &len);
	assert_string_equal(out, "{\"v\":1,\"from\":\"a\",\"boot\":3,\"seq\":4,\"msgs\":["
	                         "{\"type\":\"io\",\"cmd\":\"set\",\"io\":\"is_armed\",\"val\":1}]}");
	assert_int_equal(len, strlen(out));
	wire__writer_free(&w);

	/* A legacy writer produces the seed's plain list. */
	env.legacy = true;
	encode(&w, &c, &env, &m, 1, &out, &len);
	assert_string_equal(out, "[{\"type\":\"io\",\"cmd\":\"set\",\"io\":\"is_armed\",\"val\":1}]");
	assert_int_equal(wire__decode(&c, out, len, &dg, &rej), 0);
	assert_true(dg.env.legacy);
	assert_null(dg.env.from);
	assert_int_equal(dg.env.boot, 0);
	assert_int_equal(dg.env.seq, 0);
	assert_int_equal(dg.n_msgs, 1);
	assert_string_equal(dg.msgs[0].io, "is_armed");
	wire__datagram_release(&dg);

	/* An empty datagram is valid. */
	assert_int_equal(wire__begin(&w, &env), 0);
	assert_int_equal(wire__finish(&w, &out, &len), 0);
	assert_string_equal(out, "[]");
	env.legacy = false;
	assert_int_equal(wire__begin(&w, &env), 0);
	assert_int_equal(wire__finish(&w, &out, &len), 0);
	assert_int_equal(wire__decode(&c, out, len, &dg, &rej), 0);
	assert_int_equal(dg.n_msgs, 0);
	assert_null(dg.msgs);
	wire__datagram_release(&dg);

	/* Envelopes the decoder would refuse are not written. */
	env = env_of("", 1, 1);
	assert_int_equal(wire__begin(&w, &env), -EINVAL);
	env = env_of("a", 0, 1);
	assert_int_equal(wire__begin(&w, &env), -EINVAL);
	env = env_of("a", 1, 0);
	assert_int_equal(wire__begin(&w, &env), -EINVAL);
	env = env_of("a", (uint64_t)INT64_MAX + 1, 1);
	assert_int_equal(wire__begin(&w, &env), -EINVAL);
	env = env_of("0123456789012345678901234567890123456789012345678901234567890123", 1, 1);
	assert_int_equal(wire__begin(&w, &env), -EINVAL);
	wire__writer_free(&w);
}

/* "dw" says the sender keeps durable windows and "ob" the origin boot of a
 * resumed request; both round-trip, and neither appears when it is not so. */
static void test_durable_window_fields(void **state)
{
	struct wire_codec c = plain_codec();
	struct wire_env env = env_of("a", 9, 1);
	struct wire_msg m = io_msg(WIRE_OP_PULSE, "door");
	struct wire_writer w;
	struct wire_datagram dg;
	tsync_reject rej;
	const void *out;
	size_t len;

	m.has_id = true;
	m.id = 3;
	m.ob = 7;
	env.durable = true;
	encode(&w, &c, &env, &m, 1, &out, &len);
	assert_string_equal(out, "{\"v\":1,\"from\":\"a\",\"boot\":9,\"seq\":1,\"dw\":1,\"msgs\":["
	                         "{\"type\":\"io\",\"cmd\":\"pulse\",\"io\":\"door\",\"id\":3,\"ob\":7}]}");
	assert_int_equal(wire__decode(&c, out, len, &dg, &rej), 0);
	assert_true(dg.env.durable);
	assert_false(dg.msgs[0].bad);
	assert_int_equal(dg.msgs[0].ob, 7);
	assert_int_equal(dg.msgs[0].id, 3);
	wire__datagram_release(&dg);
	wire__writer_free(&w);

	m.ob = 0;
	env.durable = false;
	encode(&w, &c, &env, &m, 1, &out, &len);
	assert_null(strstr(out, "\"dw\""));
	assert_null(strstr(out, "\"ob\""));
	assert_int_equal(wire__decode(&c, out, len, &dg, &rej), 0);
	assert_false(dg.env.durable);
	assert_int_equal(dg.msgs[0].ob, 0);
	wire__datagram_release(&dg);
	wire__writer_free(&w);

	/* "dw" other than 1 is no promise; "ob" 0 or not a number is malformed. */
	static const char other[] =
	    "{\"v\":1,\"from\":\"a\",\"boot\":1,\"seq\":1,\"dw\":true,\"msgs\":["
	    "{\"type\":\"io\",\"cmd\":\"pulse\",\"io\":\"d\",\"id\":1,\"ob\":0},"
	    "{\"type\":\"io\",\"cmd\":\"pulse\",\"io\":\"d\",\"id\":2,\"ob\":\"1\"}]}";
	assert_int_equal(wire__decode(&c, other, strlen(other), &dg, &rej), 0);
	assert_false(dg.env.durable);
	assert_true(dg.msgs[0].bad);
	assert_true(dg.msgs[1].bad);
	wire__datagram_release(&dg);
}

static void test_seed_legacy_list(void **state)
{
	struct wire_codec c = plain_codec();
	struct wire_datagram dg;
	tsync_reject rej;

	assert_int_equal(
	    decode_text(&c,
	                "[{\"type\":\"io\",\"io\":\"is_armed\",\"cmd\":\"set\",\"val\":1},"
	                "{\"type\":\"io\",\"io\":\"is_armed_partial\",\"cmd\":\"set\",\"val\":true}]",
	                &dg, &rej),
	    0);
	assert_true(dg.env.legacy);
	assert_null(dg.env.from);
	assert_int_equal(dg.env.boot, 0);
	assert_int_equal(dg.env.to_boot, 0);
	assert_int_equal(dg.env.re, 0);
	assert_int_equal(dg.n_msgs, 2);
	assert_int_equal(dg.msgs[0].op, WIRE_OP_SET);
	assert_int_equal(dg.msgs[0].val.type, TSYNC_TYPE_INT);
	assert_string_equal(dg.msgs[1].io, "is_armed_partial");
	assert_int_equal(dg.msgs[1].val.type, TSYNC_TYPE_BOOL);
	assert_true(dg.msgs[1].val.u.b);
	wire__datagram_release(&dg);

	assert_int_equal(decode_text(&c, " [ ] ", &dg, &rej), 0);
	assert_true(dg.env.legacy);
	assert_int_equal(dg.n_msgs, 0);
	wire__datagram_release(&dg);

	/* Unknown envelope members are ignored, for later versions. */
	assert_int_equal(
	    decode_text(&c,
	                "{\"v\":1,\"from\":\"b\",\"boot\":2,\"seq\":9,\"hint\":[1,{}],"
	                "\"msgs\":[{\"type\":\"io\",\"cmd\":\"set\",\"io\":\"x\",\"val\":false}]}",
	                &dg, &rej),
	    0);
	assert_false(dg.env.legacy);
	assert_int_equal(dg.msgs[0].val.type, TSYNC_TYPE_BOOL);
	assert_false(dg.msgs[0].val.u.b);
	wire__datagram_release(&dg);
}

/* A Python seed sends "val": None as null: an ask, a reply or a pulse
 * carrying it is read as one without a value, not refused as a bad value. */
static void test_seed_val_null(void **state)
{
	struct wire_codec c = plain_codec();
	struct wire_datagram dg;
	tsync_reject rej;

	assert_int_equal(
	    decode_text(&c, "[{\"type\":\"io\",\"cmd\":\"ask\",\"io\":\"X\",\"val\":null}]", &dg, &rej), 0);
	assert_true(dg.env.legacy);
	assert_int_equal(dg.n_msgs, 1);
	assert_false(dg.msgs[0].bad);
	assert_int_equal(dg.msgs[0].op, WIRE_OP_ASK);
	assert_string_equal(dg.msgs[0].io, "X");
	assert_false(dg.msgs[0].has_val);
	wire__datagram_release(&dg);

	assert_int_equal(decode_text(&c,
	                             "[{\"type\":\"io\",\"cmd\":\"reply\",\"io\":\"X\",\"val\":null},"
	                             "{\"type\":\"io\",\"cmd\":\"pulse\",\"io\":\"door\",\"val\":null}]",
	                             &dg, &rej),
	                 0);
	assert_int_equal(dg.n_msgs, 2);
	for (size_t i = 0; i < dg.n_msgs; i++) {
		assert_false(dg.msgs[i].bad);
		assert_false(dg.msgs[i].has_val);
	}
	wire__datagram_release(&dg);

	/* In an envelope too; and a set still needs a value, null or absent. */
	assert_int_equal(decode_text(&c,
	                             "{\"v\":1,\"from\":\"a\",\"boot\":1,\"seq\":1,\"msgs\":["
	                             "{\"type\":\"io\",\"cmd\":\"ask\",\"io\":\"X\",\"val\":null}]}",
	                             &dg, &rej),
	                 0);
	assert_false(dg.msgs[0].bad);
	assert_false(dg.msgs[0].has_val);
	wire__datagram_release(&dg);
	expect_bad_msg("{\"type\":\"io\",\"cmd\":\"set\",\"io\":\"x\",\"val\":null}", TSYNC_REJ_VAL);
	expect_bad_msg("{\"type\":\"io\",\"cmd\":\"set\",\"io\":\"x\"}", TSYNC_REJ_VAL);
	/* Other non-scalars stay bad values. */
	expect_bad_msg("{\"type\":\"io\",\"cmd\":\"ask\",\"io\":\"x\",\"val\":[]}", TSYNC_REJ_VAL);
	expect_bad_msg("{\"type\":\"io\",\"cmd\":\"ask\",\"io\":\"x\",\"val\":{}}", TSYNC_REJ_VAL);
}

/* ------------------------------------------------------------------ strings and numbers */

static void roundtrip_string(const struct wire_codec *c, const char *s, const char *want_json)
{
	struct wire_env env = env_of("a", 1, 1);
	struct wire_msg m = io_msg(WIRE_OP_REPLY, "s");
	struct wire_writer w;
	struct wire_datagram dg;
	tsync_reject rej;
	const void *out;
	size_t len;

	m.has_val = true;
	m.val = tsync_string(s);
	m.err = s;
	encode(&w, c, &env, &m, 1, &out, &len);
	if (want_json && !strstr(out, want_json))
		fail_msg("%s does not contain %s", (const char *)out, want_json);
	assert_int_equal(wire__decode(c, out, len, &dg, &rej), 0);
	assert_false(dg.msgs[0].bad);
	assert_int_equal(dg.msgs[0].val.type, TSYNC_TYPE_STRING);
	assert_string_equal(dg.msgs[0].val.u.s, s);
	assert_string_equal(dg.msgs[0].err, s);
	wire__datagram_release(&dg);
	wire__writer_free(&w);
}

static void test_string_escaping(void **state)
{
	struct wire_codec c = plain_codec();
	struct wire_codec k = keyed_codec(key_a);
	char all_ctl[40];
	struct wire_writer w;
	struct wire_env env = env_of("a", 1, 1);
	struct wire_msg m = io_msg(WIRE_OP_REPLY, "s");
	size_t mark;

	roundtrip_string(&c, "say \"hi\"", "\"val\":\"say \\\"hi\\\"\"");
	roundtrip_string(&c, "C:\\dir\\", "\"val\":\"C:\\\\dir\\\\\"");
	roundtrip_string(&c, "a\nb\tc\rd\x01\x1f", "\"val\":\"a\\u000ab\\u0009c\\u000dd\\u0001\\u001f\"");
	roundtrip_string(&c, "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80",
	                 "\"val\":\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\"");
	roundtrip_string(&c, "\x7f/<>", "\"val\":\"\x7f/<>\"");
	roundtrip_string(&c, "", "\"val\":\"\"");
	roundtrip_string(&k, "\"\\\"\\", NULL);
	for (int i = 1; i < 32; i++)
		all_ctl[i - 1] = (char)i;
	all_ctl[31] = '\0';
	roundtrip_string(&c, all_ctl, NULL);
	roundtrip_string(&k, all_ctl, NULL);

	/* Bytes that are not UTF-8 would make the receiver drop the whole
	 * datagram: the writer refuses them and stays as it was. */
	wire__writer_init(&w, &c);
	assert_int_equal(wire__begin(&w, &env), 0);
	mark = w.b.len;
	m.has_val = true;
	m.val = tsync_string("bad \xff");
	assert_int_equal(wire__add(&w, &m), -EINVAL);
	m.val = tsync_string("overlong \xc0\xaf");
	assert_int_equal(wire__add(&w, &m), -EINVAL);
	m.val = tsync_string("surrogate \xed\xa0\x80");
	assert_int_equal(wire__add(&w, &m), -EINVAL);
	m.val = tsync_string("cut \xe2\x82");
	assert_int_equal(wire__add(&w, &m), -EINVAL);
	m.val = tsync_string("ok");
	m.io = "bad\xfe";
	assert_int_equal(wire__add(&w, &m), -EINVAL);
	assert_int_equal(w.b.len, mark);
	assert_int_equal(w.n_msgs, 0);
	wire__writer_free(&w);
}

/* Encodes a float value; returns its decoded value and checks the text. */
static double roundtrip_float(double f, const char *want_json)
{
	struct wire_codec c = plain_codec();
	struct wire_env env = env_of("a", 1, 1);
	struct wire_msg m = io_msg(WIRE_OP_SET, "f");
	struct wire_writer w;
	struct wire_datagram dg;
	tsync_reject rej;
	const void *out;
	size_t len;
	double got;

	m.has_val = true;
	m.val = tsync_float(f);
	encode(&w, &c, &env, &m, 1, &out, &len);
	if (want_json && !strstr(out, want_json))
		fail_msg("%s does not contain %s", (const char *)out, want_json);
	assert_int_equal(wire__decode(&c, out, len, &dg, &rej), 0);
	assert_false(dg.msgs[0].bad);
	assert_int_equal(dg.msgs[0].val.type, TSYNC_TYPE_FLOAT);
	got = dg.msgs[0].val.u.f;
	wire__datagram_release(&dg);
	wire__writer_free(&w);
	return got;
}

static void test_float_format(void **state)
{
	struct wire_codec c = plain_codec();
	struct wire_env env = env_of("a", 1, 1);
	struct wire_msg m = io_msg(WIRE_OP_SET, "f");
	struct wire_writer w;
	double vals[] = {0.1, 1.0 / 3, DBL_MAX, DBL_MIN, 5e-324, 123456789.125, -2.5e-7, 1e16, 1e22};

	assert_true(roundtrip_float(1.0, "\"val\":1.0}") == 1.0);
	assert_true(roundtrip_float(1e300, "\"val\":1e+300}") == 1e300);
	assert_true(roundtrip_float(-0.5, "\"val\":-0.5}") == -0.5);
	assert_true(roundtrip_float(0.1, "\"val\":0.1}") == 0.1);
	assert_true(roundtrip_float(0.0, "\"val\":0.0}") == 0.0);
	assert_true(signbit(roundtrip_float(-0.0, "\"val\":-0.0}")));
	assert_true(roundtrip_float(1e16, "\"val\":1e+16}") == 1e16);
	for (size_t i = 0; i < ARRAY_SIZE(vals); i++)
		assert_true(roundtrip_float(vals[i], NULL) == vals[i]);

	/* JSON has no NaN or infinity. */
	wire__writer_init(&w, &c);
	assert_int_equal(wire__begin(&w, &env), 0);
	m.has_val = true;
	m.val = tsync_float(NAN);
	assert_int_equal(wire__add(&w, &m), -EINVAL);
	m.val = tsync_float(-INFINITY);
	assert_int_equal(wire__add(&w, &m), -EINVAL);
	assert_int_equal(w.n_msgs, 0);
	wire__writer_free(&w);
}

static void test_int_limits(void **state)
{
	struct wire_codec c = plain_codec();
	struct wire_env env = env_of("a", INT64_MAX, INT64_MAX);
	struct wire_msg m[2];
	struct wire_writer w;
	struct wire_datagram dg;
	tsync_reject rej;
	const void *out;
	size_t len;

	m[0] = io_msg(WIRE_OP_SET, "i");
	m[0].has_val = true;
	m[0].val = tsync_int(INT64_MIN);
	m[0].has_ver = true;
	m[0].ver = INT64_MAX;
	m[0].ms = WIRE_MS_MAX;
	m[1] = io_msg(WIRE_OP_SET, "j");
	m[1].has_val = true;
	m[1].val = tsync_int(INT64_MAX);
	m[1].has_id = true;
	m[1].id = 0;
	env.to_boot = INT64_MAX;
	env.re = INT64_MAX;
	encode(&w, &c, &env, m, 2, &out, &len);
	assert_int_equal(wire__decode(&c, out, len, &dg, &rej), 0);
	assert_true(dg.env.boot == INT64_MAX);
	assert_true(dg.env.to_boot == INT64_MAX);
	assert_true(dg.msgs[0].val.u.i == INT64_MIN);
	assert_true(dg.msgs[0].ver == INT64_MAX);
	assert_int_equal(dg.msgs[0].ms, WIRE_MS_MAX);
	assert_true(dg.msgs[1].val.u.i == INT64_MAX);
	assert_true(dg.msgs[1].has_id);
	assert_int_equal(dg.msgs[1].id, 0);
	wire__datagram_release(&dg);

	/* Numbers JSON cannot carry as integers are refused. */
	assert_int_equal(wire__begin(&w, &env), 0);
	m[0].ver = (uint64_t)INT64_MAX + 1;
	assert_int_equal(wire__add(&w, &m[0]), -EINVAL);
	m[0].ver = 1;
	m[0].ms = WIRE_MS_MAX + 1;
	assert_int_equal(wire__add(&w, &m[0]), -EINVAL);
	wire__writer_free(&w);
}

static void test_encode_refuses_invalid(void **state)
{
	struct wire_codec c = plain_codec();
	struct wire_env env = env_of("a", 1, 1);
	struct wire_writer w;
	struct wire_msg m;
	char longstr[300];
	size_t mark;

	memset(longstr, 'x', sizeof(longstr) - 1);
	longstr[sizeof(longstr) - 1] = '\0';
	wire__writer_init(&w, &c);
	assert_int_equal(wire__begin(&w, &env), 0);
	mark = w.b.len;

	m = io_msg(WIRE_OP_ASK, NULL);
	assert_int_equal(wire__add(&w, &m), -EINVAL);
	m = io_msg(WIRE_OP_ASK, "");
	assert_int_equal(wire__add(&w, &m), -EINVAL);
	m = io_msg(WIRE_OP_ASK, "0123456789012345678901234567890123456789012345678901234567890123");
	assert_int_equal(wire__add(&w, &m), -EINVAL);
	m = io_msg(WIRE_OP_NONE, "x");
	assert_int_equal(wire__add(&w, &m), -EINVAL);
	m = io_msg(WIRE_OP_SET, "x"); /* set without val */
	assert_int_equal(wire__add(&w, &m), -EINVAL);
	m.has_val = true;
	m.val.type = TSYNC_TYPE_NONE;
	assert_int_equal(wire__add(&w, &m), -EINVAL);
	m.val = tsync_string(longstr); /* 299 > max_string */
	assert_int_equal(wire__add(&w, &m), -EINVAL);
	m.val = tsync_int(1);
	m.err = longstr;
	assert_int_equal(wire__add(&w, &m), -EINVAL);
	m.err = NULL;
	m.body = "[1]";
	assert_int_equal(wire__add(&w, &m), -EINVAL);
	m.body = "{";
	assert_int_equal(wire__add(&w, &m), -EINVAL);

	memset(&m, 0, sizeof(m));
	m.type = WIRE_T_CMD;
	m.role = "r";
	assert_int_equal(wire__add(&w, &m), -EINVAL);
	m.type = WIRE_T_OTHER;
	assert_int_equal(wire__add(&w, &m), -EINVAL);
	m.type_name = "";
	assert_int_equal(wire__add(&w, &m), -EINVAL);
	m.type = WIRE_T_CUM;
	m.io = "";
	assert_int_equal(wire__add(&w, &m), -EINVAL);

	assert_int_equal(w.b.len, mark);
	assert_int_equal(w.n_msgs, 0);
	m.io = "ok";
	assert_int_equal(wire__add(&w, &m), 0);
	assert_int_equal(w.n_msgs, 1);
	wire__writer_free(&w);
}

/* ------------------------------------------------------------------ size limits */

static void test_emsgsize_keeps_writer(void **state)
{
	struct wire_codec c = keyed_codec(key_a);
	struct wire_env env = env_of("a", 1, 1);
	struct wire_msg small = io_msg(WIRE_OP_ASK, "x");
	struct wire_msg big = io_msg(WIRE_OP_REPLY, "y");
	struct wire_writer w;
	struct wire_datagram dg;
	tsync_reject rej;
	char bigstr[201];
	char *before;
	size_t before_len, len;
	const void *out;

	memset(bigstr, 'b', 200);
	bigstr[200] = '\0';
	big.has_val = true;
	big.val = tsync_string(bigstr);
	c.max_datagram = 200;

	/* A lone message too large for an empty datagram. */
	wire__writer_init(&w, &c);
	assert_int_equal(wire__begin(&w, &env), 0);
	before_len = w.b.len;
	assert_int_equal(wire__add(&w, &big), -EMSGSIZE);
	assert_int_equal(w.n_msgs, 0);
	assert_int_equal(w.b.len, before_len);
	assert_int_equal(wire__finish(&w, &out, &len), 0);
	assert_int_equal(wire__decode(&c, out, len, &dg, &rej), 0);
	assert_int_equal(dg.n_msgs, 0);
	wire__datagram_release(&dg);

	/* Fill up with small ones, then one that does not fit. */
	assert_int_equal(wire__begin(&w, &env), 0);
	while (wire__add(&w, &small) == 0)
		;
	assert_true(w.n_msgs > 1);
	before_len = w.b.len;
	before = malloc(before_len + 1);
	assert_non_null(before);
	memcpy(before, w.b.data, before_len + 1);
	assert_int_equal(wire__add(&w, &big), -EMSGSIZE);
	assert_int_equal(wire__add(&w, &small), -EMSGSIZE);
	assert_int_equal(w.b.len, before_len);
	assert_memory_equal(w.b.data, before, before_len + 1);
	assert_int_equal(wire__finish(&w, &out, &len), 0);
	assert_true(len <= c.max_datagram);
	assert_int_equal(wire__decode(&c, out, len, &dg, &rej), 0);
	assert_int_equal(dg.n_msgs, w.n_msgs);
	for (size_t i = 0; i < dg.n_msgs; i++)
		assert_string_equal(dg.msgs[i].io, "x");
	wire__datagram_release(&dg);
	free(before);

	/* The writer is reusable after all that. */
	assert_int_equal(wire__begin(&w, &env), 0);
	assert_int_equal(wire__add(&w, &small), 0);
	assert_int_equal(w.n_msgs, 1);
	wire__writer_free(&w);
}

/* Bytes a message adds to a datagram that already holds one. */
static size_t msg_cost(const struct wire_codec *c, const struct wire_env *env, const struct wire_msg *m)
{
	struct wire_codec big = *c;
	struct wire_writer w;
	size_t one, two;

	big.max_datagram = 65535;
	wire__writer_init(&w, &big);
	assert_int_equal(wire__begin(&w, env), 0);
	assert_int_equal(wire__add(&w, m), 0);
	one = w.b.len;
	assert_int_equal(wire__add(&w, m), 0);
	two = w.b.len;
	wire__writer_free(&w);
	return two - one;
}

/* Messages m[0..k) in turn, in a datagram of max bytes, until one does not
 * fit: it truly does not (the writer stopped not one message early), the
 * datagram is within max and reads back whole into *dg (released by the
 * caller). */
static void fill_datagram(bool keyed, uint32_t max, const struct wire_env *env, const struct wire_msg *m,
                          size_t k, struct wire_datagram *dg)
{
	struct wire_codec c = keyed ? keyed_codec(key_a) : plain_codec();
	struct wire_writer w;
	tsync_reject rej;
	const void *out;
	size_t len, cost, i = 0;
	int r;

	c.max_datagram = max;
	wire__writer_init(&w, &c);
	assert_int_equal(wire__begin(&w, env), 0);
	while ((r = wire__add(&w, &m[i % k])) == 0)
		i++;
	assert_int_equal(r, -EMSGSIZE);
	cost = msg_cost(&c, env, &m[i % k]);
	if (w.n_msgs == 0)
		cost -= 1; /* no comma before the first */
	assert_true(w.b.len + cost + 2 + (keyed ? WIRE_TAG_BYTES : 0) > max);
	assert_int_equal(wire__finish(&w, &out, &len), 0);
	assert_true(len <= max);
	assert_int_equal(wire__decode(&c, out, len, dg, &rej), 0);
	assert_int_equal(dg->n_msgs, i);
	wire__writer_free(&w);
}

static void test_full_datagram_fits(void **state)
{
	struct wire_env env = env_of("controller-7", 12, 345);
	struct wire_msg m[3];
	struct wire_writer w;
	struct wire_datagram dg;

	m[0] = io_msg(WIRE_OP_SET, "is_armed");
	m[0].has_val = true;
	m[0].val = tsync_int(1);
	m[0].has_ver = true;
	m[0].ver = 99;
	m[1] = io_msg(WIRE_OP_REPLY, "display\ttext");
	m[1].has_val = true;
	m[1].val = tsync_string("\"quoted\" \\ and \x01");
	m[2] = io_msg(WIRE_OP_PULSE, "door");
	m[2].ms = 250;
	m[2].has_id = true;
	m[2].id = 77;

	for (int keyed = 0; keyed < 2; keyed++) {
		for (uint32_t max = 120; max <= 700; max += 7) {
			fill_datagram(keyed, max, &env, m, 3, &dg);
			wire__datagram_release(&dg);
		}
	}

	/* A max_datagram too small for the envelope itself. */
	{
		struct wire_codec c = keyed_codec(key_a);
		c.max_datagram = 40;
		wire__writer_init(&w, &c);
		assert_int_equal(wire__begin(&w, &env), -EMSGSIZE);
		wire__writer_free(&w);
	}
}

/* Sets only (the writer's short way, which knows a set's length before it
 * writes it): at every max_datagram, byte by byte, a datagram takes sets
 * until the next one truly does not fit, whatever the lengths of their
 * numbers, and not one fewer. */
static void test_sets_fill_exactly(void **state)
{
	static const int64_t vals[] = {0, -1, 7, 12345678, -98765432101, 99, 100, INT64_MIN, INT64_MAX};
	static const uint64_t vers[] = {1, 10, 999999, 1000000, 123456789012345678ull, 9};
	struct wire_env env = env_of("controller-7", 12, 345);
	enum { K = 11 };
	struct wire_msg m[K];
	char names[K][8];
	struct wire_datagram dg;

	(void)state;
	for (int k = 0; k < K; k++) {
		snprintf(names[k], sizeof(names[k]), "t%d", k * 37);
		m[k] = io_msg(k == 4 ? WIRE_OP_REPLY : WIRE_OP_SET, names[k]);
		m[k].has_val = m[k].has_ver = true;
		m[k].val = k == 3 ? tsync_bool(true) : tsync_int(vals[k % 9]);
		m[k].ver = vers[k % 6];
	}
	for (int keyed = 0; keyed < 2; keyed++) {
		for (uint32_t max = 110; max <= 700; max++) {
			fill_datagram(keyed, max, &env, m, K, &dg);
			for (size_t j = 0; j < dg.n_msgs; j++) {
				/* A bool goes as 1 or 0, read back as the integer. */
				int64_t want = m[j % K].val.type == TSYNC_TYPE_BOOL ? m[j % K].val.u.b : m[j % K].val.u.i;
				assert_string_equal(dg.msgs[j].io, names[j % K]);
				assert_true(dg.msgs[j].ver == m[j % K].ver);
				assert_true(dg.msgs[j].val.type == TSYNC_TYPE_INT && dg.msgs[j].val.u.i == want);
			}
			wire__datagram_release(&dg);
		}
	}
}

/* "ack" in the envelope: written and read as pairs, offered even empty,
 * refused when it is anything but pairs of integers 1 <= first <= last (at
 * most WIRE_ACK_RANGES of them). */
static void test_acks_in_envelope(void **state)
{
	struct wire_codec c = plain_codec();
	struct wire_env env = env_of("a", 3, 4);
	struct wire_writer w;
	struct wire_datagram dg;
	tsync_reject rej;
	const void *out;
	size_t len;
	char text[1024];

	(void)state;
	env.acks_ok = true;
	encode(&w, &c, &env, NULL, 0, &out, &len);
	assert_string_equal(out, "{\"v\":1,\"from\":\"a\",\"boot\":3,\"seq\":4,\"ack\":[],\"msgs\":[]}");
	assert_int_equal(wire__decode(&c, out, len, &dg, &rej), 0);
	assert_true(dg.env.acks_ok);
	assert_int_equal(dg.env.n_acks, 0);
	wire__datagram_release(&dg);
	wire__writer_free(&w);

	env.n_acks = 2;
	env.acks[0][0] = 7;
	env.acks[0][1] = 9;
	env.acks[1][0] = 12;
	env.acks[1][1] = 12;
	encode(&w, &c, &env, NULL, 0, &out, &len);
	assert_string_equal(out, "{\"v\":1,\"from\":\"a\",\"boot\":3,\"seq\":4,\"ack\":[7,9,12,12],\"msgs\":[]}");
	assert_int_equal(wire__decode(&c, out, len, &dg, &rej), 0);
	assert_int_equal(dg.env.n_acks, 2);
	assert_int_equal(dg.env.acks[0][0], 7);
	assert_int_equal(dg.env.acks[0][1], 9);
	assert_int_equal(dg.env.acks[1][0], 12);
	assert_int_equal(dg.env.acks[1][1], 12);
	wire__datagram_release(&dg);
	wire__writer_free(&w);

	/* Without acks_ok nothing is written, and nothing is read. */
	env.acks_ok = false;
	encode(&w, &c, &env, NULL, 0, &out, &len);
	assert_null(strstr(out, "ack"));
	assert_int_equal(wire__decode(&c, out, len, &dg, &rej), 0);
	assert_false(dg.env.acks_ok);
	wire__datagram_release(&dg);
	wire__writer_free(&w);

	/* The writer refuses what the reader would. */
	env.acks_ok = true;
	wire__writer_init(&w, &c);
	env.acks[1][0] = 13;
	assert_int_equal(wire__begin(&w, &env), -EINVAL); /* 13 > 12 */
	env.acks[1][0] = 0;
	env.acks[1][1] = 0;
	assert_int_equal(wire__begin(&w, &env), -EINVAL);
	env.n_acks = WIRE_ACK_RANGES + 1;
	assert_int_equal(wire__begin(&w, &env), -EINVAL);
	wire__writer_free(&w);

	{
		static const char *const bad[] = {
		    "null", "{}", "1", "\"1,2\"", "[1]", "[1,2,3]", "[2,1]", "[0,1]", "[-1,1]", "[1,2.0]",
		    "[1,\"2\"]", "[[1,2]]", "[1,true]", "[1,null]",
		};
		for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
			snprintf(text, sizeof(text),
			         "{\"v\":1,\"from\":\"a\",\"boot\":1,\"seq\":1,\"ack\":%s,\"msgs\":[]}", bad[i]);
			expect_reject(&c, text, TSYNC_REJ_JSON);
		}
	}
	/* At most WIRE_ACK_RANGES pairs, and "ack" only once. */
	{
		size_t n = (size_t)snprintf(text, sizeof(text), "{\"v\":1,\"from\":\"a\",\"boot\":1,\"seq\":1,\"ack\":[");
		for (int i = 1; i <= WIRE_ACK_RANGES; i++)
			n += (size_t)snprintf(text + n, sizeof(text) - n, "%s%d,%d", i > 1 ? "," : "", i, i);
		snprintf(text + n, sizeof(text) - n, "],\"msgs\":[]}");
		assert_int_equal(decode_text(&c, text, &dg, &rej), 0);
		assert_int_equal(dg.env.n_acks, WIRE_ACK_RANGES);
		wire__datagram_release(&dg);
		snprintf(text + n, sizeof(text) - n, ",99,99],\"msgs\":[]}");
		expect_reject(&c, text, TSYNC_REJ_JSON);
		expect_reject(&c, "{\"v\":1,\"from\":\"a\",\"boot\":1,\"seq\":1,\"ack\":[],\"ack\":[],\"msgs\":[]}",
		              TSYNC_REJ_JSON);
	}
	/* A message's "ack" is none of the envelope's business. */
	assert_int_equal(decode_text(&c,
	                             "{\"v\":1,\"from\":\"a\",\"boot\":1,\"seq\":1,\"msgs\":[{\"type\":\"x\","
	                             "\"ack\":[0]}]}",
	                             &dg, &rej),
	                 0);
	assert_false(dg.env.acks_ok);
	wire__datagram_release(&dg);
}

/* Sets and replies of integers and booleans take the writer's short way:
 * the same bytes as every other message's way. */
static void test_batch_messages_text(void **state)
{
	struct wire_codec c = plain_codec();
	struct wire_env env = env_of("a", 1, 1);
	struct wire_msg m[5];
	struct wire_writer w;
	struct wire_datagram dg;
	tsync_reject rej;
	const void *out;
	size_t len;

	(void)state;
	m[0] = io_msg(WIRE_OP_SET, "t0");
	m[0].has_val = m[0].has_ver = true;
	m[0].val = tsync_int(INT64_MIN);
	m[0].ver = INT64_MAX;
	m[1] = io_msg(WIRE_OP_REPLY, "t1");
	m[1].has_val = m[1].has_ver = true;
	m[1].val = tsync_bool(true);
	m[1].ver = 0;
	m[2] = io_msg(WIRE_OP_SET, "q\"x"); /* escaped: the long way */
	m[2].has_val = m[2].has_ver = true;
	m[2].val = tsync_int(-5);
	m[2].ver = 3;
	m[3] = io_msg(WIRE_OP_SET, "t3");
	m[3].has_val = m[3].has_ver = true;
	m[3].val = tsync_bool(false);
	m[3].ver = 10;
	m[4] = io_msg(WIRE_OP_SET, "t4"); /* with an id: the long way */
	m[4].has_val = m[4].has_id = true;
	m[4].val = tsync_int(0);
	m[4].id = 4;
	encode(&w, &c, &env, m, 5, &out, &len);
	assert_string_equal(out, "{\"v\":1,\"from\":\"a\",\"boot\":1,\"seq\":1,\"msgs\":["
	                         "{\"type\":\"io\",\"cmd\":\"set\",\"io\":\"t0\",\"val\":-9223372036854775808,"
	                         "\"ver\":9223372036854775807},"
	                         "{\"type\":\"io\",\"cmd\":\"reply\",\"io\":\"t1\",\"val\":1,\"ver\":0},"
	                         "{\"type\":\"io\",\"cmd\":\"set\",\"io\":\"q\\\"x\",\"val\":-5,\"ver\":3},"
	                         "{\"type\":\"io\",\"cmd\":\"set\",\"io\":\"t3\",\"val\":0,\"ver\":10},"
	                         "{\"type\":\"io\",\"cmd\":\"set\",\"io\":\"t4\",\"val\":0,\"id\":4}]}");
	assert_int_equal(wire__decode(&c, out, len, &dg, &rej), 0);
	assert_int_equal(dg.n_msgs, 5);
	assert_int_equal(dg.msgs[0].val.u.i, INT64_MIN);
	wire__datagram_release(&dg);
	wire__writer_free(&w);

	/* A version over INT64_MAX is refused either way. */
	m[0].ver = (uint64_t)INT64_MAX + 1;
	wire__writer_init(&w, &c);
	assert_int_equal(wire__begin(&w, &env), 0);
	assert_int_equal(wire__add(&w, &m[0]), -EINVAL);
	assert_int_equal(w.n_msgs, 0);
	wire__writer_free(&w);
}

/* Every number of digits, both ways, and the envelope's numbers: the
 * writer's digits (two at a time) are printf's. */
static void test_numbers_text(void **state)
{
	struct wire_codec c = plain_codec();
	struct wire_msg m = io_msg(WIRE_OP_SET, "t");
	struct wire_writer w;
	const void *out;
	size_t len;
	char want[256];

	(void)state;
	for (int k = 0; k <= 19; k++) {
		uint64_t p = 1;
		for (int i = 0; i < k; i++)
			p *= 10;
		for (int d = -1; d <= 1; d++) {
			uint64_t u = k == 19 ? (uint64_t)INT64_MAX - (d == 1 ? 0 : 1 + (uint64_t)d) : p + (uint64_t)d;
			struct wire_env env = env_of("a", u ? u : 1, u ? u : 1);
			if (k == 0 && d < 0)
				continue;
			for (int neg = 0; neg < 2; neg++) {
				int64_t v = neg ? (u == (uint64_t)INT64_MAX ? INT64_MIN : -(int64_t)u) : (int64_t)u;
				m.has_val = m.has_ver = true;
				m.val = tsync_int(v);
				m.ver = u;
				encode(&w, &c, &env, &m, 1, &out, &len);
				snprintf(want, sizeof(want),
				         "{\"v\":1,\"from\":\"a\",\"boot\":%llu,\"seq\":%llu,\"msgs\":[{\"type\":\"io\","
				         "\"cmd\":\"set\",\"io\":\"t\",\"val\":%lld,\"ver\":%llu}]}",
				         (unsigned long long)(u ? u : 1), (unsigned long long)(u ? u : 1), (long long)v,
				         (unsigned long long)u);
				assert_string_equal(out, want);
				/* and read back as written */
				struct wire_datagram dg;
				tsync_reject rej;
				assert_int_equal(wire__decode(&c, out, len, &dg, &rej), 0);
				assert_true(dg.msgs[0].val.u.i == v && dg.msgs[0].ver == u);
				assert_true(dg.env.boot == (u ? u : 1));
				wire__datagram_release(&dg);
				wire__writer_free(&w);
			}
		}
	}
}

/* The reader takes integers 8 bytes at a time: every byte after numbers of
 * 1 to 20 digits (within a word, at its end, across two, past the 15 it
 * reads that way) ends the number or continues it exactly as JSON says.
 * Whitespace is JSON's, so the general reader accepts it; a digit makes the
 * number longer; anything else there is malformed. */
static void test_int_reader_bytes(void **state)
{
	static const char digits[] = "12345678901234567890";
	struct wire_codec c = plain_codec();
	char text[256];

	(void)state;
	for (int n = 1; n <= 20; n++) {
		for (int b = 1; b < 256; b++) {
			struct wire_datagram dg;
			tsync_reject rej;
			bool ws = b == ' ' || b == '\t' || b == '\n' || b == '\r';
			bool digit = b >= '0' && b <= '9';
			int len = snprintf(text, sizeof(text),
			                   "{\"v\":1,\"from\":\"a\",\"boot\":1,\"seq\":1,\"msgs\":[{\"type\":\"io\","
			                   "\"cmd\":\"set\",\"io\":\"t\",\"val\":%.*s%c,\"ver\":%.*s%c}]}",
			                   n, digits, b, n, digits, b);
			long long want = 0;
			uint64_t wantv = 0;
			int total = n + digit;
			int r = wire__decode(&c, text, (size_t)len, &dg, &rej);
			for (int i = 0; i < total && i < 19; i++) {
				int d = i < n ? digits[i] - '0' : b - '0';
				want = want * 10 + d;
				wantv = wantv * 10 + (uint64_t)d;
			}
			if (!(ws || digit) || total > 19) {
				/* Malformed, or a value past int64 (refused as such). */
				if (r == 0) {
					assert_true(total > 19 && dg.n_msgs == 1 && dg.msgs[0].bad);
					wire__datagram_release(&dg);
				}
				continue;
			}
			assert_int_equal(r, 0);
			assert_int_equal(dg.n_msgs, 1);
			assert_false(dg.msgs[0].bad);
			assert_true(dg.msgs[0].val.type == TSYNC_TYPE_INT && dg.msgs[0].val.u.i == want);
			assert_true(dg.msgs[0].has_ver && dg.msgs[0].ver == wantv);
			wire__datagram_release(&dg);
		}
	}
}

/* Every byte of ASCII in a set's name, the fast writer's and the general
 * one's choice alike: as it is, or escaped as JSON wants. */
static void test_name_bytes_text(void **state)
{
	struct wire_codec c = plain_codec();
	struct wire_env env = env_of("a", 1, 1);
	struct wire_msg m = io_msg(WIRE_OP_SET, NULL);
	struct wire_writer w;
	struct wire_datagram dg;
	tsync_reject rej;
	const void *out;
	size_t len;
	char name[4], esc[8], want[256];

	(void)state;
	for (int b = 1; b < 128; b++) {
		snprintf(name, sizeof(name), "a%cb", b);
		if (b < 0x20)
			snprintf(esc, sizeof(esc), "\\u%04x", b);
		else if (b == '"' || b == '\\')
			snprintf(esc, sizeof(esc), "\\%c", b);
		else
			snprintf(esc, sizeof(esc), "%c", b);
		m.io = name;
		m.has_val = m.has_ver = true;
		m.val = tsync_int(7);
		m.ver = 9;
		encode(&w, &c, &env, &m, 1, &out, &len);
		snprintf(want, sizeof(want),
		         "{\"v\":1,\"from\":\"a\",\"boot\":1,\"seq\":1,\"msgs\":[{\"type\":\"io\",\"cmd\":\"set\","
		         "\"io\":\"a%sb\",\"val\":7,\"ver\":9}]}",
		         esc);
		assert_string_equal(out, want);
		assert_int_equal(wire__decode(&c, out, len, &dg, &rej), 0);
		assert_string_equal(dg.msgs[0].io, name);
		wire__datagram_release(&dg);
		wire__writer_free(&w);
	}
}

/* The reader finds the end of a plain name 8 bytes at a time: names (of a
 * set and of the sender) of every length up to WIRE_NAME_MAX, with a byte
 * that ends the plain run ('"', '\\', a control byte, UTF-8) at every
 * place or none, read back as written, whatever their place in a word. */
static void test_name_ends_anywhere(void **state)
{
	static const char *odd[] = {"", "\"", "\\", "\x01", "\x1f", "\xc3\xa9", "\x7f"};
	char name[WIRE_NAME_MAX + 8];
	struct wire_msg m = io_msg(WIRE_OP_SET, NULL);
	struct wire_codec c = plain_codec();
	struct wire_datagram dg;
	struct wire_writer w;
	const void *out;
	tsync_reject rej;
	size_t len;

	(void)state;
	for (size_t k = 0; k < sizeof(odd) / sizeof(odd[0]); k++) {
		size_t ol = strlen(odd[k]);
		for (size_t n = 1; n + ol <= WIRE_NAME_MAX; n++) {
			for (size_t at = 0; at <= n; at += (k == 0 ? n + 1 : 1)) {
				struct wire_env env;
				memset(name, 'x', n);
				memcpy(name + at, odd[k], ol);
				memset(name + at + ol, 'y', n - at);
				name[n + ol] = '\0';
				env = env_of(name, 3, 4);
				m.io = name;
				m.has_val = m.has_ver = true;
				m.val = tsync_int(-12);
				m.ver = 5;
				encode(&w, &c, &env, &m, 1, &out, &len);
				assert_int_equal(wire__decode(&c, out, len, &dg, &rej), 0);
				assert_int_equal(dg.n_msgs, 1);
				assert_false(dg.msgs[0].bad);
				assert_string_equal(dg.msgs[0].io, name);
				assert_string_equal(dg.env.from, name);
				assert_true(dg.msgs[0].val.u.i == -12 && dg.msgs[0].ver == 5);
				wire__datagram_release(&dg);
				wire__writer_free(&w);
			}
		}
	}
	/* Not UTF-8 (a byte 0xff anywhere in a name of 21): not JSON. */
	for (int at = 0; at < 21; at++) {
		char text[256];
		int n;
		memset(name, 'x', 21);
		name[at] = (char)0xff;
		name[21] = '\0';
		n = snprintf(text, sizeof(text),
		             "{\"v\":1,\"from\":\"a\",\"boot\":1,\"seq\":1,\"msgs\":[{\"type\":\"io\","
		             "\"cmd\":\"set\",\"io\":\"%s\",\"val\":1,\"ver\":1}]}",
		             name);
		assert_true(wire__decode(&c, text, (size_t)n, &dg, &rej) < 0);
		assert_int_equal(rej, TSYNC_REJ_JSON);
	}
}

/* The reader's short way for the writer's batch messages gives what the
 * general way gives, and leaves every other spelling to it. */
static void test_batch_messages_read(void **state)
{
	struct wire_codec c = plain_codec();
	struct wire_datagram dg;
	tsync_reject rej;
	char text[1400];
	static const struct {
		const char *msg;
		bool bad;
		int64_t val;
		uint64_t ver;
		const char *io;
	} cases[] = {
	    {"{\"type\":\"io\",\"cmd\":\"set\",\"io\":\"t0\",\"val\":20000,\"ver\":100002}", false, 20000, 100002, "t0"},
	    {"{\"type\":\"io\",\"cmd\":\"set\",\"io\":\"t0\",\"val\":-9223372036854775808,\"ver\":9223372036854775807}",
	     false, INT64_MIN, INT64_MAX, "t0"},
	    {"{\"type\":\"io\",\"cmd\":\"set\",\"io\":\"t0\",\"val\":-0,\"ver\":0}", false, 0, 0, "t0"},
	    {"{\"type\":\"io\",\"cmd\":\"set\",\"io\":\"t\\u0030\",\"val\":1,\"ver\":2}", false, 1, 2, "t0"},
	    {"{\"type\":\"io\",\"cmd\":\"set\",\"io\":\"t0\",\"val\":1,\"ver\":2 }", false, 1, 2, "t0"},
	    {"{\"type\":\"io\",\"cmd\":\"set\",\"io\":\"t0\",\"val\":1,\"ver\":-1}", true, 0, 0, "t0"},
	    {"{\"type\":\"io\",\"cmd\":\"set\",\"io\":\"\",\"val\":1,\"ver\":1}", true, 0, 0, NULL},
	    {"{\"type\":\"io\",\"cmd\":\"set\",\"io\":\"t0\",\"val\":1.5,\"ver\":1}", false, 0, 1, "t0"},
	};

	(void)state;
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		snprintf(text, sizeof(text), "{\"v\":1,\"from\":\"a\",\"boot\":1,\"seq\":1,\"msgs\":[%s,%s]}",
		         cases[i].msg, cases[i].msg);
		assert_int_equal(decode_text(&c, text, &dg, &rej), 0);
		assert_int_equal(dg.n_msgs, 2);
		for (int k = 0; k < 2; k++) {
			const struct wire_msg *m = &dg.msgs[k];
			if (m->bad != cases[i].bad)
				fail_msg("%s: bad %d", cases[i].msg, m->bad);
			assert_int_equal(m->type, WIRE_T_IO);
			assert_string_equal(m->type_name, "io");
			assert_int_equal(m->op, WIRE_OP_SET);
			if (cases[i].io)
				assert_string_equal(m->io, cases[i].io);
			if (cases[i].bad)
				continue;
			assert_true(m->has_val && m->has_ver);
			assert_int_equal(m->ver, cases[i].ver);
			if (m->val.type == TSYNC_TYPE_INT)
				assert_int_equal(m->val.u.i, cases[i].val);
			else
				assert_true(m->val.type == TSYNC_TYPE_FLOAT && m->val.u.f == 1.5);
			assert_false(m->has_id || m->has_re || m->ob || m->ms || m->err);
		}
		wire__datagram_release(&dg);
	}
	/* What the general reader refuses, the short way does not take. */
	expect_reject(&c,
	              "{\"v\":1,\"from\":\"a\",\"boot\":1,\"seq\":1,\"msgs\":["
	              "{\"type\":\"io\",\"cmd\":\"set\",\"io\":\"t0\",\"val\":01,\"ver\":1}]}",
	              TSYNC_REJ_JSON);
	expect_reject(&c,
	              "{\"v\":1,\"from\":\"a\",\"boot\":1,\"seq\":1,\"msgs\":["
	              "{\"type\":\"io\",\"cmd\":\"set\",\"io\":\"t0\",\"val\":9223372036854775808,\"ver\":1}]}",
	              TSYNC_REJ_JSON);
	expect_reject(&c,
	              "{\"v\":1,\"from\":\"a\",\"boot\":1,\"seq\":1,\"msgs\":["
	              "{\"type\":\"io\",\"cmd\":\"set\",\"io\":\"t0\",\"val\":1,\"ver\":1,\"ver\":2}]}",
	              TSYNC_REJ_JSON);
	/* A name over 63 bytes is a bad message, not a long one. */
	{
		char name[65];
		memset(name, 'n', 64);
		name[64] = '\0';
		snprintf(text, sizeof(text),
		         "{\"v\":1,\"from\":\"a\",\"boot\":1,\"seq\":1,\"msgs\":["
		         "{\"type\":\"io\",\"cmd\":\"set\",\"io\":\"%s\",\"val\":1,\"ver\":1}]}",
		         name);
		assert_int_equal(decode_text(&c, text, &dg, &rej), 0);
		assert_true(dg.msgs[0].bad);
		assert_int_equal(dg.msgs[0].reject, TSYNC_REJ_IO);
		wire__datagram_release(&dg);
		name[63] = '\0';
		snprintf(text, sizeof(text),
		         "{\"v\":1,\"from\":\"a\",\"boot\":1,\"seq\":1,\"msgs\":["
		         "{\"type\":\"io\",\"cmd\":\"set\",\"io\":\"%s\",\"val\":1,\"ver\":1}]}",
		         name);
		assert_int_equal(decode_text(&c, text, &dg, &rej), 0);
		assert_false(dg.msgs[0].bad);
		assert_int_equal(strlen(dg.msgs[0].io), 63);
		wire__datagram_release(&dg);
	}
}

static void test_writer_max_msgs(void **state)
{
	struct wire_codec c = plain_codec();
	struct wire_env env = env_of("a", 1, 1);
	struct wire_msg m = io_msg(WIRE_OP_ASK, "x");
	struct wire_writer w;

	c.max_msgs = 3;
	wire__writer_init(&w, &c);
	assert_int_equal(wire__begin(&w, &env), 0);
	assert_int_equal(wire__add(&w, &m), 0);
	assert_int_equal(wire__add(&w, &m), 0);
	assert_int_equal(wire__add(&w, &m), 0);
	assert_int_equal(wire__add(&w, &m), -EMSGSIZE);
	assert_int_equal(w.n_msgs, 3);
	wire__writer_free(&w);
}

/* A message added again from its bytes (wire__last_msg(),
 * wire__add_raw_comma() of a copy with a comma before it, as the engine does for a set that goes to several users) makes the same
 * datagram, to the byte, as writing it does, and stops at the same place
 * when the datagram is full or holds max_msgs. */
static void test_add_raw_same_bytes(void **state)
{
	struct wire_env env = env_of("controller-7", 12, 345);
	struct wire_msg m[3];
	struct wire_writer w, r;
	const char *bytes[3];
	size_t lens[3], n;

	m[0] = io_msg(WIRE_OP_SET, "is_armed"); /* the batch's shape (add_io_fast) */
	m[0].has_val = true;
	m[0].val = tsync_int(-12345);
	m[0].has_ver = true;
	m[0].ver = 99;
	m[1] = io_msg(WIRE_OP_SET, "display\ttext"); /* the general writer */
	m[1].has_val = true;
	m[1].val = tsync_string("\"quoted\" \\ and \x01");
	m[1].has_ver = true;
	m[1].ver = 100;
	m[2] = io_msg(WIRE_OP_SET, "temp");
	m[2].has_val = true;
	m[2].val = tsync_float(21.5);
	m[2].has_ver = true;
	m[2].ver = 101;
	for (int keyed = 0; keyed < 2; keyed++) {
		for (uint32_t max = 120; max <= 900; max += 11) {
			struct wire_codec c = keyed ? keyed_codec(key_a) : plain_codec();
			struct wire_writer one;
			size_t i = 0;
			char *copy;
			int ra, rb;

			c.max_datagram = max;
			c.max_msgs = 5 + max % 7;
			/* Each message's bytes, as a writer left them. */
			wire__writer_init(&one, &c);
			for (int k = 0; k < 3; k++) {
				assert_int_equal(wire__begin(&one, &env), 0);
				if (wire__add(&one, &m[k]) < 0) {
					lens[k] = 0;
					continue;
				}
				bytes[k] = wire__last_msg(&one, &n);
				lens[k] = n;
				/* each in a buffer of its own, after a comma: never one run */
				copy = malloc(n + 1);
				copy[0] = ',';
				bytes[k] = memcpy(copy + 1, bytes[k], n);
				assert_true(n > 0 && bytes[k][0] == '{' && bytes[k][n - 1] == '}');
			}
			wire__writer_free(&one);
			if (!lens[0] || !lens[1] || !lens[2]) {
				for (int k = 0; k < 3; k++)
					if (lens[k])
						free((void *)(bytes[k] - 1));
				continue;
			}
			wire__writer_init(&w, &c);
			wire__writer_init(&r, &c);
			assert_int_equal(wire__begin(&w, &env), 0);
			assert_int_equal(wire__begin(&r, &env), 0);
			for (;; i++) {
				ra = wire__add(&w, &m[i % 3]);
				rb = wire__add_raw_comma(&r, bytes[i % 3], lens[i % 3]);
				assert_int_equal(ra, rb);
				if (ra < 0)
					break;
				/* The copy's last message is the bytes copied. */
				assert_memory_equal(wire__last_msg(&r, &n), bytes[i % 3], lens[i % 3]);
				assert_int_equal(n, lens[i % 3]);
			}
			assert_int_equal(ra, -EMSGSIZE);
			assert_int_equal(w.n_msgs, r.n_msgs);
			assert_int_equal(w.b.len, r.b.len);
			assert_memory_equal(w.b.data, r.b.data, w.b.len);
			wire__writer_free(&w);
			wire__writer_free(&r);
			for (int k = 0; k < 3; k++)
				free((void *)(bytes[k] - 1));
		}
	}
}

static void test_oversize_datagram(void **state)
{
	struct wire_codec c = plain_codec();
	struct wire_codec k = keyed_codec(key_a);
	struct wire_datagram dg;
	tsync_reject rej;
	char text[2000];
	const char *head = "{\"v\":1,\"from\":\"a\",\"boot\":1,\"seq\":1,\"msgs\":[]}";
	size_t n;

	/* Exactly max_datagram (padded with JSON whitespace) is fine. */
	n = strlen(head);
	memcpy(text, head, n);
	memset(text + n, ' ', c.max_datagram - n);
	assert_int_equal(wire__decode(&c, text, c.max_datagram, &dg, &rej), 0);
	wire__datagram_release(&dg);
	text[c.max_datagram] = ' ';
	assert_int_equal(wire__decode(&c, text, c.max_datagram + 1, &dg, &rej), -EBADMSG);
	assert_int_equal(rej, TSYNC_REJ_OVERSIZE);
	assert_null(dg.root);
	/* The size is checked before the tag. */
	assert_int_equal(wire__decode(&k, text, k.max_datagram + 1, &dg, &rej), -EBADMSG);
	assert_int_equal(rej, TSYNC_REJ_OVERSIZE);
	wire__datagram_release(&dg);
}

static void test_too_many_msgs(void **state)
{
	struct wire_codec c = plain_codec();
	struct wire_datagram dg;
	tsync_reject rej;
	char text[400];
	size_t n;

	c.max_msgs = 4;
	n = (size_t)snprintf(text, sizeof(text), "{\"v\":1,\"from\":\"a\",\"boot\":1,\"seq\":1,\"msgs\":[");
	for (int i = 0; i < 4; i++)
		n += (size_t)snprintf(text + n, sizeof(text) - n, "%s{\"type\":\"clim\"}", i ? "," : "");
	snprintf(text + n, sizeof(text) - n, "]}");
	assert_int_equal(decode_text(&c, text, &dg, &rej), 0);
	assert_int_equal(dg.n_msgs, 4);
	wire__datagram_release(&dg);

	snprintf(text + n, sizeof(text) - n, ",5]}");
	expect_reject(&c, text, TSYNC_REJ_OVERSIZE);
	expect_reject(&c, "[1,2,3,4,5]", TSYNC_REJ_OVERSIZE);
}

/* ------------------------------------------------------------------ malformed input */

static void test_malformed_json(void **state)
{
	struct wire_codec c = plain_codec();
	struct wire_datagram dg;
	tsync_reject rej;
	char text[200];
	size_t n;

	expect_reject(&c, "", TSYNC_REJ_JSON);
	expect_reject(&c, "{", TSYNC_REJ_JSON);
	expect_reject(&c, "not json", TSYNC_REJ_JSON);
	expect_reject(&c, "\"a string\"", TSYNC_REJ_JSON);
	expect_reject(&c, "42", TSYNC_REJ_JSON);
	expect_reject(&c, "null", TSYNC_REJ_JSON);
	expect_reject(&c, "[1,]", TSYNC_REJ_JSON);
	expect_reject(&c, "[] []", TSYNC_REJ_JSON);
	expect_reject(&c, "[\"\\u0000\"]", TSYNC_REJ_JSON);
	expect_reject(&c, "[\"\xff\"]", TSYNC_REJ_JSON);
	expect_reject(&c, "[99999999999999999999]", TSYNC_REJ_JSON);

	/* A NUL inside the datagram is not JSON either. */
	assert_int_equal(wire__decode(&c, "[]\0", 3, &dg, &rej), -EBADMSG);
	assert_int_equal(rej, TSYNC_REJ_JSON);

	/* Without a key, a tagged datagram is just JSON followed by junk. */
	n = (size_t)snprintf(text, sizeof(text), "{\"v\":1,\"from\":\"a\",\"boot\":1,\"seq\":1,\"msgs\":[]}");
	memset(text + n, 'T', WIRE_TAG_BYTES);
	assert_int_equal(wire__decode(&c, text, n + WIRE_TAG_BYTES, &dg, &rej), -EBADMSG);
	assert_int_equal(rej, TSYNC_REJ_JSON);
	wire__datagram_release(&dg);
}

static void test_bad_envelope(void **state)
{
	struct wire_codec c = plain_codec();
	static const char *const bad[] = {
	    "{}",
	    "{\"from\":\"a\",\"boot\":1,\"seq\":1,\"msgs\":[]}",
	    "{\"v\":2,\"from\":\"a\",\"boot\":1,\"seq\":1,\"msgs\":[]}",
	    "{\"v\":\"1\",\"from\":\"a\",\"boot\":1,\"seq\":1,\"msgs\":[]}",
	    "{\"v\":1.0,\"from\":\"a\",\"boot\":1,\"seq\":1,\"msgs\":[]}",
	    "{\"v\":1,\"boot\":1,\"seq\":1,\"msgs\":[]}",
	    "{\"v\":1,\"from\":\"\",\"boot\":1,\"seq\":1,\"msgs\":[]}",
	    "{\"v\":1,\"from\":5,\"boot\":1,\"seq\":1,\"msgs\":[]}",
	    ("{\"v\":1,\"from\":\"0123456789012345678901234567890123456789012345678901234567890123\","
	     "\"boot\":1,\"seq\":1,\"msgs\":[]}"),
	    "{\"v\":1,\"from\":\"a\",\"seq\":1,\"msgs\":[]}",
	    "{\"v\":1,\"from\":\"a\",\"boot\":0,\"seq\":1,\"msgs\":[]}",
	    "{\"v\":1,\"from\":\"a\",\"boot\":\"1\",\"seq\":1,\"msgs\":[]}",
	    "{\"v\":1,\"from\":\"a\",\"boot\":1.5,\"seq\":1,\"msgs\":[]}",
	    "{\"v\":1,\"from\":\"a\",\"boot\":1,\"msgs\":[]}",
	    "{\"v\":1,\"from\":\"a\",\"boot\":1,\"seq\":0,\"msgs\":[]}",
	    "{\"v\":1,\"from\":\"a\",\"boot\":1,\"seq\":-1,\"msgs\":[]}",
	    "{\"v\":1,\"from\":\"a\",\"boot\":1,\"seq\":1,\"to_boot\":-1,\"msgs\":[]}",
	    "{\"v\":1,\"from\":\"a\",\"boot\":1,\"seq\":1,\"to_boot\":null,\"msgs\":[]}",
	    "{\"v\":1,\"from\":\"a\",\"boot\":1,\"seq\":1,\"re\":\"x\",\"msgs\":[]}",
	    "{\"v\":1,\"from\":\"a\",\"boot\":1,\"seq\":1}",
	    "{\"v\":1,\"from\":\"a\",\"boot\":1,\"seq\":1,\"msgs\":{}}",
	    "{\"v\":1,\"from\":\"a\",\"boot\":1,\"seq\":1,\"msgs\":null}",
	};

	for (size_t i = 0; i < ARRAY_SIZE(bad); i++)
		expect_reject(&c, bad[i], TSYNC_REJ_JSON);
}

static void test_duplicate_keys(void **state)
{
	struct wire_codec c = plain_codec();

	expect_reject(&c, "{\"v\":1,\"from\":\"a\",\"boot\":1,\"seq\":1,\"seq\":2,\"msgs\":[]}",
	              TSYNC_REJ_JSON);
	expect_reject(&c,
	              "{\"v\":1,\"from\":\"a\",\"boot\":1,\"seq\":1,\"msgs\":["
	              "{\"type\":\"io\",\"cmd\":\"set\",\"io\":\"x\",\"val\":1,\"val\":0}]}",
	              TSYNC_REJ_JSON);
	expect_reject(&c, "[{\"type\":\"io\",\"type\":\"cmd\"}]", TSYNC_REJ_JSON);
}

static void test_bad_message_among_good(void **state)
{
	struct wire_codec c = plain_codec();
	struct wire_datagram dg;
	tsync_reject rej;
	char longstr[300], longval[400];

	expect_bad_msg("5", TSYNC_REJ_REQ);
	expect_bad_msg("[]", TSYNC_REJ_REQ);
	expect_bad_msg("{\"cmd\":\"set\",\"io\":\"x\",\"val\":1}", TSYNC_REJ_REQ);
	expect_bad_msg("{\"type\":5}", TSYNC_REJ_REQ);
	expect_bad_msg("{\"type\":\"\"}", TSYNC_REJ_REQ);
	expect_bad_msg("{\"type\":\"io\",\"cmd\":\"toggle\",\"io\":\"x\"}", TSYNC_REJ_REQ);
	expect_bad_msg("{\"type\":\"io\",\"cmd\":1,\"io\":\"x\"}", TSYNC_REJ_REQ);
	expect_bad_msg("{\"type\":\"io\",\"io\":\"x\"}", TSYNC_REJ_REQ);
	expect_bad_msg("{\"type\":\"io\",\"cmd\":\"ask\"}", TSYNC_REJ_IO);
	expect_bad_msg("{\"type\":\"io\",\"cmd\":\"ask\",\"io\":\"\"}", TSYNC_REJ_IO);
	expect_bad_msg("{\"type\":\"io\",\"cmd\":\"ask\",\"io\":7}", TSYNC_REJ_IO);
	expect_bad_msg("{\"type\":\"io\",\"cmd\":\"ask\",\"io\":"
	               "\"0123456789012345678901234567890123456789012345678901234567890123\"}",
	               TSYNC_REJ_IO);
	expect_bad_msg("{\"type\":\"io\",\"cmd\":\"set\",\"io\":\"x\"}", TSYNC_REJ_VAL);
	expect_bad_msg("{\"type\":\"io\",\"cmd\":\"set\",\"io\":\"x\",\"val\":null}", TSYNC_REJ_VAL);
	expect_bad_msg("{\"type\":\"io\",\"cmd\":\"set\",\"io\":\"x\",\"val\":[1]}", TSYNC_REJ_VAL);
	expect_bad_msg("{\"type\":\"io\",\"cmd\":\"reply\",\"io\":\"x\",\"val\":{}}", TSYNC_REJ_VAL);
	expect_bad_msg("{\"type\":\"io\",\"cmd\":\"pulse\",\"io\":\"x\",\"ms\":86400001}", TSYNC_REJ_VAL);
	expect_bad_msg("{\"type\":\"io\",\"cmd\":\"pulse\",\"io\":\"x\",\"ms\":-1}", TSYNC_REJ_VAL);
	expect_bad_msg("{\"type\":\"io\",\"cmd\":\"pulse\",\"io\":\"x\",\"ms\":0.5}", TSYNC_REJ_VAL);
	expect_bad_msg("{\"type\":\"io\",\"cmd\":\"ask\",\"io\":\"x\",\"ver\":-1}", TSYNC_REJ_REQ);
	expect_bad_msg("{\"type\":\"io\",\"cmd\":\"ask\",\"io\":\"x\",\"id\":\"7\"}", TSYNC_REJ_REQ);
	expect_bad_msg("{\"type\":\"io\",\"cmd\":\"ask\",\"io\":\"x\",\"re\":1.0}", TSYNC_REJ_REQ);
	expect_bad_msg("{\"type\":\"io\",\"cmd\":\"reply\",\"io\":\"x\",\"err\":5}", TSYNC_REJ_REQ);
	expect_bad_msg("{\"type\":\"cmd\",\"cmd\":\"report\"}", TSYNC_REJ_CMD);
	expect_bad_msg("{\"type\":\"cmd\",\"role\":\"security\"}", TSYNC_REJ_CMD);
	expect_bad_msg("{\"type\":\"cmd\",\"role\":\"\",\"cmd\":\"report\"}", TSYNC_REJ_CMD);
	expect_bad_msg("{\"type\":\"cmd\",\"role\":\"security\",\"cmd\":[]}", TSYNC_REJ_CMD);
	expect_bad_msg("{\"type\":\"cum\",\"fld\":5}", TSYNC_REJ_IO);

	/* A string of 257 bytes, one over max_string. */
	memset(longstr, 'v', 257);
	longstr[257] = '\0';
	snprintf(longval, sizeof(longval), "{\"type\":\"io\",\"cmd\":\"set\",\"io\":\"x\",\"val\":\"%s\"}",
	         longstr);
	expect_bad_msg(longval, TSYNC_REJ_OVERSIZE);
	snprintf(longval, sizeof(longval), "{\"type\":\"io\",\"cmd\":\"reply\",\"io\":\"x\",\"err\":\"%s\"}",
	         longstr);
	expect_bad_msg(longval, TSYNC_REJ_OVERSIZE);
	/* Exactly max_string is fine. */
	longstr[256] = '\0';
	snprintf(longval, sizeof(longval), "[{\"type\":\"io\",\"cmd\":\"set\",\"io\":\"x\",\"val\":\"%s\"}]",
	         longstr);
	assert_int_equal(decode_text(&c, longval, &dg, &rej), 0);
	assert_false(dg.msgs[0].bad);
	assert_int_equal(strlen(dg.msgs[0].val.u.s), 256);
	wire__datagram_release(&dg);
}

static void test_bad_message_fields_kept(void **state)
{
	struct wire_codec c = plain_codec();
	struct wire_datagram dg;
	tsync_reject rej;

	/* The first fault is the reason; the id is still there to answer. */
	assert_int_equal(decode_text(&c,
	                             "[{\"type\":\"io\",\"cmd\":\"pulse\",\"io\":\"door\",\"val\":[],"
	                             "\"ms\":-5,\"id\":11},"
	                             "{\"type\":\"io\",\"cmd\":\"set\",\"io\":\"x\",\"val\":256},"
	                             "{\"type\":\"io\",\"cmd\":\"pulse\",\"io\":\"d\"},"
	                             "{\"type\":\"io\",\"cmd\":\"ask\",\"io\":\"d\",\"val\":\"ok\"},"
	                             "{\"type\":\"clim\",\"whatever\":[1]}]",
	                             &dg, &rej),
	                 0);
	assert_int_equal(dg.n_msgs, 5);
	assert_true(dg.msgs[0].bad);
	assert_int_equal(dg.msgs[0].reject, TSYNC_REJ_VAL);
	assert_string_equal(dg.msgs[0].io, "door");
	assert_true(dg.msgs[0].has_id);
	assert_int_equal(dg.msgs[0].id, 11);
	assert_false(dg.msgs[0].has_val);
	assert_false(dg.msgs[1].bad);
	assert_int_equal(dg.msgs[1].val.u.i, 256);
	/* A pulse may come without a value. */
	assert_false(dg.msgs[2].bad);
	assert_false(dg.msgs[2].has_val);
	assert_int_equal(dg.msgs[2].ms, 0);
	assert_false(dg.msgs[3].bad);
	assert_string_equal(dg.msgs[3].val.u.s, "ok");
	assert_false(dg.msgs[4].bad);
	assert_int_equal(dg.msgs[4].type, WIRE_T_CLIM);
	wire__datagram_release(&dg);
}

/* ------------------------------------------------------------------ authentication */

static void test_auth(void **state)
{
	struct wire_codec c = keyed_codec(key_a);
	struct wire_codec wrong = keyed_codec(key_b);
	struct wire_codec plain = plain_codec();
	struct wire_env env = env_of("a", 1, 2);
	struct wire_msg m = io_msg(WIRE_OP_SET, "is_armed");
	struct wire_writer w;
	struct wire_datagram dg;
	tsync_reject rej;
	const void *out;
	size_t len;
	uint8_t copy[1400];
	const char *list = "[{\"type\":\"io\",\"cmd\":\"ask\",\"io\":\"x\"}]";

	m.has_val = true;
	m.val = tsync_int(1);
	encode(&w, &c, &env, &m, 1, &out, &len);
	assert_int_equal(wire__decode(&c, out, len, &dg, &rej), 0);
	assert_int_equal(dg.n_msgs, 1);
	wire__datagram_release(&dg);
	memcpy(copy, out, len);

	/* One flipped bit anywhere, JSON or tag. */
	for (size_t i = 0; i < len; i++) {
		copy[i] ^= 0x01;
		assert_int_equal(wire__decode(&c, copy, len, &dg, &rej), -EBADMSG);
		assert_int_equal(rej, TSYNC_REJ_AUTH);
		assert_null(dg.root);
		copy[i] ^= 0x01;
	}
	assert_int_equal(wire__decode(&c, copy, len, &dg, &rej), 0);
	wire__datagram_release(&dg);

	assert_int_equal(wire__decode(&wrong, out, len, &dg, &rej), -EBADMSG);
	assert_int_equal(rej, TSYNC_REJ_AUTH);
	for (size_t cut = 0; cut < len; cut += (cut < 40 ? 1 : 17)) {
		assert_int_equal(wire__decode(&c, out, cut, &dg, &rej), -EBADMSG);
		assert_int_equal(rej, TSYNC_REJ_AUTH);
	}
	/* The JSON alone, as an untagged peer would send it. */
	assert_int_equal(wire__decode(&c, out, len - WIRE_TAG_BYTES, &dg, &rej), -EBADMSG);
	assert_int_equal(rej, TSYNC_REJ_AUTH);
	wire__writer_free(&w);

	/* A legacy list is refused with a key, even correctly tagged. */
	memcpy(copy, list, strlen(list));
	assert_int_equal(wire__auth_tag(key_a, copy, strlen(list), copy + strlen(list)), 0);
	assert_int_equal(wire__decode(&c, copy, strlen(list) + WIRE_TAG_BYTES, &dg, &rej), -EBADMSG);
	assert_int_equal(rej, TSYNC_REJ_AUTH);
	memcpy(copy, " ", 1);
	memcpy(copy + 1, list, strlen(list));
	assert_int_equal(wire__auth_tag(key_a, copy, strlen(list) + 1, copy + strlen(list) + 1), 0);
	assert_int_equal(wire__decode(&c, copy, strlen(list) + 1 + WIRE_TAG_BYTES, &dg, &rej), -EBADMSG);
	assert_int_equal(rej, TSYNC_REJ_AUTH);
	expect_reject(&c, list, TSYNC_REJ_AUTH);
	/* ...and accepted without one. */
	assert_int_equal(decode_text(&plain, list, &dg, &rej), 0);
	assert_true(dg.env.legacy);
	wire__datagram_release(&dg);

	/* A correctly tagged text that is not JSON is a JSON rejection. */
	memcpy(copy, "{oops}", 6);
	assert_int_equal(wire__auth_tag(key_a, copy, 6, copy + 6), 0);
	assert_int_equal(wire__decode(&c, copy, 6 + WIRE_TAG_BYTES, &dg, &rej), -EBADMSG);
	assert_int_equal(rej, TSYNC_REJ_JSON);
	assert_int_equal(wire__auth_verify(key_a, copy, 6, copy + 6), 0);
	assert_int_equal(wire__auth_verify(key_b, copy, 6, copy + 6), -EBADMSG);
}

/* The tag of "v":3 (auth.c; test_wire_auth checks what it is): a fresh
 * nonce per datagram, in a forked child too; HMAC-SHA-512-256 tags ("v":1)
 * no longer pass; each version only with its own kind of site. */
static void test_auth_v2(void **state)
{
	static const char v1[] = "{\"v\":1,\"from\":\"a\",\"boot\":1,\"seq\":1,\"msgs\":[]}";
	static const char v2[] = "{\"v\":3,\"from\":\"a\",\"boot\":1,\"seq\":1,\"msgs\":[]}";
	struct wire_codec c = keyed_codec(key_a), plain = plain_codec(), pc = keyed_codec(key_a);
	struct wire_auth_key *prep;
	struct wire_datagram dg;
	tsync_reject rej;
	uint8_t a[256], b[256], child[WIRE_TAG_BYTES], t_parent[WIRE_TAG_BYTES];
	size_t n = sizeof(v2) - 1;
	int fds[2], status;
	pid_t pid;

	(void)state;
	/* The same text twice: two nonces, two tags, both good. */
	memcpy(a, v2, n);
	memcpy(b, v2, n);
	assert_int_equal(wire__auth_tag(key_a, a, n, a + n), 0);
	assert_int_equal(wire__auth_tag(key_a, b, n, b + n), 0);
	assert_memory_not_equal(a + n, b + n, 16);
	assert_memory_not_equal(a + n + 16, b + n + 16, 16);
	assert_int_equal(wire__decode(&c, a, n + WIRE_TAG_BYTES, &dg, &rej), 0);
	wire__datagram_release(&dg);
	assert_int_equal(wire__decode(&c, b, n + WIRE_TAG_BYTES, &dg, &rej), 0);
	wire__datagram_release(&dg);
	/* One datagram's nonce with the other's tag. */
	memcpy(a + n + 16, b + n + 16, 16);
	assert_int_equal(wire__decode(&c, a, n + WIRE_TAG_BYTES, &dg, &rej), -EBADMSG);
	assert_int_equal(rej, TSYNC_REJ_AUTH);

	/* A forked child does not repeat its parent's nonces, and its
	 * prepared key (a copy of the parent's, whose sending subkey is the
	 * parent prefix's) computes the subkey of its own prefix. */
	assert_int_equal(wire__auth_prepare(key_a, &prep), 0);
	pc.auth = prep;
	assert_int_equal(wire__codec_tag(&pc, v2, n, t_parent), 0);
	assert_int_equal(pipe(fds), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		uint8_t t[WIRE_TAG_BYTES];
		ssize_t w = -1;
		if (wire__codec_tag(&pc, v2, n, t) == 0)
			w = write(fds[1], t, sizeof(t));
		_exit(w == (ssize_t)sizeof(t) ? 0 : 1);
	}
	assert_int_equal(read(fds[0], child, sizeof(child)), (ssize_t)sizeof(child));
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	close(fds[0]);
	close(fds[1]);
	assert_int_equal(wire__auth_tag(key_a, b, n, b + n), 0);
	assert_memory_not_equal(child, b + n, 8); /* the random prefix */
	assert_memory_not_equal(child, t_parent, 8);
	assert_int_equal(wire__auth_verify(key_a, v2, n, child), 0);
	assert_int_equal(wire__codec_verify(&pc, v2, n, child), 0);
	/* The parent's own subkey is still right for its prefix. */
	assert_int_equal(wire__codec_tag(&pc, v2, n, t_parent), 0);
	assert_int_equal(wire__auth_verify(key_a, v2, n, t_parent), 0);
	wire__auth_free(prep);

	/* The old tag, HMAC-SHA-512-256 of a "v":1 envelope, is refused. */
	memcpy(a, v1, n);
	crypto_auth(a + n, a, n, key_a);
	assert_int_equal(wire__decode(&c, a, n + WIRE_TAG_BYTES, &dg, &rej), -EBADMSG);
	assert_int_equal(rej, TSYNC_REJ_AUTH);
	/* A good tag on "v":1, and "v":3 without a key: refused envelopes. */
	assert_int_equal(wire__auth_tag(key_a, a, n, a + n), 0);
	assert_int_equal(wire__decode(&c, a, n + WIRE_TAG_BYTES, &dg, &rej), -EBADMSG);
	assert_int_equal(rej, TSYNC_REJ_JSON);
	assert_int_equal(wire__decode(&plain, v2, n, &dg, &rej), -EBADMSG);
	assert_int_equal(rej, TSYNC_REJ_JSON);
	assert_int_equal(wire__decode(&plain, v1, n, &dg, &rej), 0);
	wire__datagram_release(&dg);
}

static char *env_text(char *o, const struct wire_env *env, bool keyed, const char *name_json);

/* The writer's envelope, written in one go for a plain name (encode.c,
 * begin_fast()) or member by member otherwise: the same text either way,
 * as printf() would write it, for envelopes with and without each optional
 * member and numbers of every length; a datagram too small for it refuses
 * it whole. */
static void test_envelope_text_fast(void **state)
{
	static const struct {
		const char *name, *json; /* as given, as written */
	} names[] = {{"PI-Light", "PI-Light"}, {"a", "a"}, {"q\"b\\", "q\\\"b\\\\"}, {"\xc3\xa9t\xc3\xa9", "\xc3\xa9t\xc3\xa9"}};
	uint64_t x = 0x9e3779b97f4a7c15u;

	(void)state;
	for (int i = 0; i < 400; i++) {
		struct wire_codec c = i % 2 ? keyed_codec(key_a) : plain_codec();
		struct wire_env env;
		struct wire_writer w;
		char want[1400], *o = want;
		uint64_t n[4];
		const void *out;
		size_t len;

		for (int k = 0; k < 4; k++) {
			x ^= x << 13, x ^= x >> 7, x ^= x << 17;
			n[k] = (x >> (x % 63)) & INT64_MAX;
		}
		env = env_of(names[i % 4].name, n[0] ? n[0] : 1, n[1] ? n[1] : 1);
		env.to_boot = i % 3 ? n[2] : 0;
		env.re = i % 5 ? n[3] : 0;
		env.durable = i % 7 == 0;
		env.acks_ok = i % 4 != 1;
		env.n_acks = env.acks_ok ? (uint32_t)(i % (WIRE_ACK_RANGES + 1)) : 0;
		for (uint32_t a = 0; a < env.n_acks; a++) {
			env.acks[a][0] = (n[a % 4] >> a) | 1;
			env.acks[a][1] = env.acks[a][0] + a;
		}
		o = env_text(o, &env, i % 2, names[i % 4].json);
		sprintf(o, "]}");
		encode(&w, &c, &env, NULL, 0, &out, &len);
		assert_int_equal(len, strlen(want) + (i % 2 ? WIRE_TAG_BYTES : 0));
		assert_memory_equal(out, want, strlen(want));
		wire__writer_free(&w);

		/* Too small a datagram: refused whole, the writer left empty. */
		c.max_datagram = (uint32_t)(strlen(want) / 2 + (i % 2 ? WIRE_TAG_BYTES : 0));
		wire__writer_init(&w, &c);
		assert_int_equal(wire__begin(&w, &env), -EMSGSIZE);
		assert_int_equal(w.b.len, 0);
		wire__writer_free(&w);
	}
}

/* printf's text of env's envelope up to and with ,"msgs":[ at o (name_json:
 * the sender's name as JSON writes it, without quotes); returns the end. */
static char *env_text(char *o, const struct wire_env *env, bool keyed, const char *name_json)
{
	o += sprintf(o, "{\"v\":%d,\"from\":\"%s\",\"boot\":%llu,\"seq\":%llu", keyed ? WIRE_VERSION : 1, name_json,
	             (unsigned long long)env->boot, (unsigned long long)env->seq);
	if (env->to_boot)
		o += sprintf(o, ",\"to_boot\":%llu", (unsigned long long)env->to_boot);
	if (env->re)
		o += sprintf(o, ",\"re\":%llu", (unsigned long long)env->re);
	if (env->durable)
		o += sprintf(o, ",\"dw\":1");
	if (env->acks_ok) {
		o += sprintf(o, ",\"ack\":[");
		for (uint32_t a = 0; a < env->n_acks; a++)
			o += sprintf(o, "%s%llu,%llu", a ? "," : "", (unsigned long long)env->acks[a][0],
			             (unsigned long long)env->acks[a][1]);
		o += sprintf(o, "]");
	}
	return o + sprintf(o, ",\"msgs\":[");
}

static uint64_t xorshift(uint64_t *x)
{
	*x ^= *x << 13, *x ^= *x >> 7, *x ^= *x << 17;
	return *x;
}

/* A number of 1 to 19 digits, each length as likely. */
static uint64_t any_digits(uint64_t *x)
{
	uint64_t v = xorshift(x) & INT64_MAX;
	unsigned n = (unsigned)(xorshift(x) % 19) + 1;
	uint64_t p = 1;

	for (unsigned i = 0; i < n - 1; i++)
		p *= 10;
	return n == 19 ? (v < p ? v + p : v) : p + v % (p * 9);
}

/*
 * The writer keeps the envelope's head ({"v":..,"from":..,"boot":..,"seq":)
 * and its ,"to_boot":.. from one datagram to the next (encode.c,
 * begin_fast()). One writer kept over thousands of envelopes in which the
 * sender's boot (it restarted), the receiver's boot (to_boot: the peer
 * restarted, or is not known, 0), the name (other names, one a prefix of
 * another, one with escapes, the same text at another address, and a buffer
 * changed in place) and the other members change at random: every text is
 * printf's, read back with the same members.
 */
static void test_envelope_kept_head(void **state)
{
	static const struct {
		const char *name, *json;
	} names[] = {{"PI-Light", "PI-Light"}, {"ab", "ab"}, {"abc", "abc"}, {"a", "a"}, {"q\"b\\", "q\\\"b\\\\"},
	             {"\xc3\xa9t\xc3\xa9", "\xc3\xa9t\xc3\xa9"},
	             {"n123456789012345678901234567890123456789012345678901234567890ab",
	              "n123456789012345678901234567890123456789012345678901234567890ab"}};
	uint64_t x = 0x2545f4914f6cdd1du;

	(void)state;
	for (int keyed = 0; keyed < 2; keyed++) {
		struct wire_codec c = keyed ? keyed_codec(key_a) : plain_codec();
		struct wire_msg m = io_msg(WIRE_OP_SET, "t1");
		struct wire_writer w;
		struct wire_env env = env_of("ab", 1, 1);
		char copy[64], want[1400], *o;
		size_t ni = 1, len;
		const void *out;

		wire__writer_init(&w, &c);
		m.has_val = m.has_ver = true;
		for (int i = 0; i < 20000; i++) {
			uint64_t r = xorshift(&x);

			if (r % 50 == 0)
				env.boot = any_digits(&x); /* I restarted */
			if (r % 20 == 1)
				env.to_boot = r % 3 ? any_digits(&x) : 0; /* it restarted, or is not known */
			if (r % 30 == 2)
				ni = (size_t)(xorshift(&x) % (sizeof(names) / sizeof(names[0])));
			/* the name's text, at its own address or in a buffer of mine */
			if (r % 7 == 3) {
				strcpy(copy, names[ni].name);
				env.from = copy;
			} else {
				env.from = names[ni].name;
			}
			env.seq = r % 11 ? env.seq + 1 : any_digits(&x);
			env.re = r % 4 ? 0 : any_digits(&x);
			env.durable = r % 5 == 0;
			env.acks_ok = r % 6 != 0;
			env.n_acks = env.acks_ok ? (uint32_t)(xorshift(&x) % 4) : 0;
			for (uint32_t a = 0; a < env.n_acks; a++) {
				env.acks[a][0] = any_digits(&x) / 2 + 1;
				env.acks[a][1] = env.acks[a][0] + (r % 9);
			}
			assert_int_equal(wire__begin(&w, &env), 0);
			o = env_text(want, &env, keyed, names[ni].json);
			if (r % 3 == 0) {
				m.val = tsync_int((int64_t)any_digits(&x) * (r % 2 ? -1 : 1));
				m.ver = any_digits(&x);
				assert_int_equal(wire__add(&w, &m), 0);
				o += sprintf(o, "{\"type\":\"io\",\"cmd\":\"set\",\"io\":\"t1\",\"val\":%lld,\"ver\":%llu}",
				             (long long)m.val.u.i, (unsigned long long)m.ver);
			}
			sprintf(o, "]}");
			assert_int_equal(wire__finish(&w, &out, &len), 0);
			assert_int_equal(len, strlen(want) + (keyed ? WIRE_TAG_BYTES : 0));
			if (memcmp(out, want, strlen(want)) != 0)
				fail_msg("envelope %d: %.*s, want %s", i, (int)strlen(want), (const char *)out, want);
			if (i % 97 == 0) {
				struct wire_datagram dg;
				tsync_reject rej;
				assert_int_equal(wire__decode(&c, out, len, &dg, &rej), 0);
				assert_string_equal(dg.env.from, names[ni].name);
				assert_true(dg.env.boot == env.boot && dg.env.to_boot == env.to_boot && dg.env.seq == env.seq);
				wire__datagram_release(&dg);
			}
		}

		/* By hand: each change shows in the very next datagram. */
		strcpy(copy, "node1");
		env = env_of(copy, 1111111111111111u, 5);
		env.to_boot = 2222222222222222u;
		for (int step = 0; step < 8; step++) {
			if (step == 1)
				env.boot = 1111111111111112u; /* restarted: the next boot */
			if (step == 2)
				env.to_boot = 2222222222222223u; /* the peer restarted */
			if (step == 3)
				copy[4] = '2'; /* the same buffer, another name */
			if (step == 4)
				strcpy(copy, "node"); /* a prefix of the one before */
			if (step == 5)
				env.to_boot = 0;
			if (step == 6)
				c.key = c.key ? NULL : key_a; /* the writer's codec keyed or not: its "v" */
			if (step == 7)
				strcpy(copy, "node22"); /* longer, with the one before as a prefix */
			env.seq++;
			assert_int_equal(wire__begin(&w, &env), 0);
			sprintf(env_text(want, &env, c.key != NULL, copy), "]}");
			assert_int_equal(wire__finish(&w, &out, &len), 0);
			assert_memory_equal(out, want, strlen(want));
		}
		wire__writer_free(&w);
	}
}

/* The writer's kept head ({"v":3,"from":..,"boot":..,"seq":) holds nothing
 * of the key itself: after a new site key (the same codec, another key) the
 * next datagram, its head copied, carries the new key's tag, which the old
 * key refuses; and back. */
static void test_kept_head_new_key(void **state)
{
	struct wire_codec c = keyed_codec(key_a), ca = keyed_codec(key_a), cb = keyed_codec(key_b);
	struct wire_env env = env_of("node1", 1764800000123456u, 1);
	struct wire_writer w;
	const uint8_t *keys[] = {key_a, key_b, key_b, key_a};

	(void)state;
	env.to_boot = 1764800000654321u;
	wire__writer_init(&w, &c);
	for (size_t i = 0; i < ARRAY_SIZE(keys); i++) {
		struct wire_datagram dg;
		tsync_reject rej;
		const void *out;
		size_t len;

		c.key = keys[i];
		env.seq++;
		assert_int_equal(wire__begin(&w, &env), 0);
		assert_int_equal(wire__finish(&w, &out, &len), 0);
		assert_int_equal(wire__decode(keys[i] == key_a ? &ca : &cb, out, len, &dg, &rej), 0);
		assert_true(dg.env.seq == env.seq && dg.env.boot == env.boot && dg.env.to_boot == env.to_boot);
		wire__datagram_release(&dg);
		assert_int_equal(wire__decode(keys[i] == key_a ? &cb : &ca, out, len, &dg, &rej), -EBADMSG);
		assert_int_equal(rej, TSYNC_REJ_AUTH);
		wire__datagram_release(&dg);
	}
	wire__writer_free(&w);
}

/* The writer's numbers go 8 digits at a time (encode.c, digits8()): each
 * group of 8 takes every value of the form k * 10001 (all 10,000 values of
 * both its halves), in the first, middle and last group of a number; and
 * numbers of every length at random, positive and negative. printf's text
 * every time. */
static void test_number_groups(void **state)
{
	struct wire_codec c = plain_codec();
	struct wire_msg m = io_msg(WIRE_OP_SET, "t");
	struct wire_env env = env_of("a", 1, 1);
	struct wire_writer w;
	uint64_t x = 0x9e3779b97f4a7c15u;
	char want[256];
	size_t len;
	const void *out;

	(void)state;
	wire__writer_init(&w, &c);
	m.has_val = m.has_ver = true;
	for (uint64_t k = 0; k < 40000; k++) {
		uint64_t g = (k % 10000) * 10001u, v;

		switch (k / 10000) {
		case 0: /* one group */
			v = g;
			break;
		case 1: /* the last of two */
			v = (k % 99999999 + 1) * 100000000u + g;
			break;
		case 2: /* the first of two and the middle of three */
			v = g * 100000000u + (99999999u - g);
			if (k % 2)
				v += 1000000000000000000u;
			break;
		default: /* at random */
			v = any_digits(&x);
			break;
		}
		v &= INT64_MAX;
		m.val = tsync_int(k % 3 == 1 ? -(int64_t)v : (int64_t)v);
		m.ver = v | (k % 5 == 0);
		env.boot = v | 1;
		env.to_boot = x & INT64_MAX;
		env.seq = k + 1;
		assert_int_equal(wire__begin(&w, &env), 0);
		assert_int_equal(wire__add(&w, &m), 0);
		assert_int_equal(wire__finish(&w, &out, &len), 0);
		snprintf(want, sizeof(want),
		         "{\"v\":1,\"from\":\"a\",\"boot\":%llu,\"seq\":%llu,\"to_boot\":%llu,\"msgs\":[{\"type\":\"io\","
		         "\"cmd\":\"set\",\"io\":\"t\",\"val\":%lld,\"ver\":%llu}]}",
		         (unsigned long long)env.boot, (unsigned long long)env.seq, (unsigned long long)env.to_boot,
		         (long long)m.val.u.i, (unsigned long long)m.ver);
		if (len != strlen(want) || memcmp(out, want, len) != 0)
			fail_msg("%.*s, want %s", (int)len, (const char *)out, want);
	}
	wire__writer_free(&w);
}

/*
 * wire__add_raw_comma(): messages kept one after another in one buffer, a
 * comma before each (as the engine keeps a pass's sets), are copied in runs
 * when they follow one another there and in the datagram. Random sequences
 * of them (in order, skipping, going back), of wire__add() and of
 * copies from a buffer of their own (never a run) between them, with
 * wire__last_msg() at random, in
 * datagrams of random sizes and message limits, some dropped and begun
 * anew: every result, every last
 * message and every datagram is that of a writer that wrote each message
 * with wire__add().
 */
static void test_add_raw_runs(void **state)
{
	enum { N = 12 };
	struct wire_env env = env_of("owner", 77, 1);
	struct wire_msg m[N];
	char names[N][32], kept[N * 128], lone[N][130], *at[N];
	size_t lens[N], k = 0, n;
	uint64_t x = 0x853c49e6748fea9bu;

	(void)state;
	for (int i = 0; i < N; i++) {
		snprintf(names[i], sizeof(names[i]), "thing%d%s", i, i % 3 ? "" : "_long_name");
		m[i] = io_msg(WIRE_OP_SET, names[i]);
		m[i].has_val = m[i].has_ver = true;
		m[i].val = tsync_int(i * 1000003 - 500);
		m[i].ver = 10 + (uint64_t)i;
	}
	for (int keyed = 0; keyed < 2; keyed++) {
		struct wire_codec c = keyed ? keyed_codec(key_a) : plain_codec();
		struct wire_writer one;

		/* Each message's bytes as a writer wrote them, a comma before
		 * each, one after another. */
		wire__writer_init(&one, &c);
		k = 0;
		for (int i = 0; i < N; i++) {
			const char *b;
			assert_int_equal(wire__begin(&one, &env), 0);
			assert_int_equal(wire__add(&one, &m[i]), 0);
			b = wire__last_msg(&one, &n);
			assert_true(k + 1 + n <= sizeof(kept));
			kept[k++] = ',';
			at[i] = memcpy(kept + k, b, n);
			lens[i] = n;
			assert_true(n + 1 <= sizeof(lone[i]));
			lone[i][0] = ',';
			memcpy(lone[i] + 1, b, n);
			k += n;
		}
		wire__writer_free(&one);
		for (int round = 0; round < 3000; round++) {
			struct wire_writer w, r;
			const void *ow, *orr;
			size_t lw, lr;
			int i = (int)(xorshift(&x) % N);

			c.max_datagram = (uint32_t)(150 + xorshift(&x) % 700);
			c.max_msgs = (uint32_t)(1 + xorshift(&x) % 15);
			wire__writer_init(&w, &c);
			wire__writer_init(&r, &c);
			env.seq++;
			assert_int_equal(wire__begin(&w, &env), 0);
			assert_int_equal(wire__begin(&r, &env), 0);
			for (int step = 0; step < 20; step++) {
				uint64_t how = xorshift(&x) % 10;
				int ra, rb;

				/* now and then the datagram is dropped, begun anew */
				if (xorshift(&x) % 16 == 0) {
					assert_int_equal(wire__begin(&w, &env), 0);
					assert_int_equal(wire__begin(&r, &env), 0);
				}
				/* mostly the next one in the buffer */
				i = how < 6 ? (i + 1) % N : (int)(xorshift(&x) % N);
				ra = wire__add(&w, &m[i]);
				if (how == 8)
					rb = wire__add(&r, &m[i]);
				else if (how == 9)
					rb = wire__add_raw_comma(&r, lone[i] + 1, lens[i]);
				else
					rb = wire__add_raw_comma(&r, at[i], lens[i]);
				assert_int_equal(ra, rb);
				assert_int_equal(w.n_msgs, r.n_msgs);
				assert_int_equal(w.b.len, r.b.len);
				if (ra == 0 && xorshift(&x) % 4 == 0) {
					const char *lw_msg = wire__last_msg(&w, &lw);
					const char *lr_msg = wire__last_msg(&r, &lr);
					assert_int_equal(lw, lr);
					assert_memory_equal(lw_msg, lr_msg, lw);
				}
			}
			assert_int_equal(wire__finish(&w, &ow, &lw), 0);
			assert_int_equal(wire__finish(&r, &orr, &lr), 0);
			assert_int_equal(lw, lr);
			if (!keyed)
				assert_memory_equal(ow, orr, lw);
			else
				assert_memory_equal(ow, orr, lw - WIRE_TAG_BYTES); /* the nonces differ */
			wire__writer_free(&w);
			wire__writer_free(&r);
		}
	}
}

/* The reader's fast envelope (decode.c, parse_env_fast()): the writer's
 * own shape is read by it; anything else falls back to the general reader
 * on a fresh copy of the text, even after the fast one read the messages in
 * place (their strings then end with NULs). Each case with a decoder kept
 * across datagrams and with a fresh one. */
static void test_envelope_fast_and_fallback(void **state)
{
	static const char set[] = "{\"type\":\"io\",\"cmd\":\"set\",\"io\":\"t0\",\"val\":7,\"ver\":3}";
	static const struct {
		const char *head, *tail;
		bool ok;
		uint64_t seq;
		uint32_t n_acks;
	} cases[] = {
	    /* the writer's own */
	    {"{\"v\":1,\"from\":\"abc\",\"boot\":5,\"seq\":9,\"to_boot\":6,\"re\":2,\"dw\":1,\"ack\":[1,2,4,4],\"msgs\":[",
	     "]}", true, 9, 2},
	    /* a member after "msgs": read the general way, from the original text */
	    {"{\"v\":1,\"from\":\"abc\",\"boot\":5,\"seq\":9,\"msgs\":[", "],\"zz\":[1]}", true, 9, 0},
	    /* the same member twice, once before and once after "msgs" */
	    {"{\"v\":1,\"from\":\"abc\",\"boot\":5,\"seq\":9,\"msgs\":[", "],\"seq\":10}", false, 0, 0},
	    /* space, another order, an escaped name */
	    {"{\"v\":1, \"from\":\"abc\",\"boot\":5,\"seq\":9,\"msgs\":[", "] }", true, 9, 0},
	    {"{\"from\":\"abc\",\"v\":1,\"seq\":9,\"boot\":5,\"msgs\":[", "]}", true, 9, 0},
	    {"{\"v\":1,\"from\":\"a\\u0062c\",\"boot\":5,\"seq\":9,\"msgs\":[", "]}", true, 9, 0},
	    /* "ack": an element < 1 or an odd count refuses the envelope */
	    {"{\"v\":1,\"from\":\"abc\",\"boot\":5,\"seq\":9,\"ack\":[0,1],\"msgs\":[", "]}", false, 0, 0},
	    {"{\"v\":1,\"from\":\"abc\",\"boot\":5,\"seq\":9,\"ack\":[1,2,3],\"msgs\":[", "]}", false, 0, 0},
	    {"{\"v\":1,\"from\":\"abc\",\"boot\":5,\"seq\":9,\"ack\":[1,],\"msgs\":[", "]}", false, 0, 0},
	    {"{\"v\":1,\"from\":\"abc\",\"boot\":5,\"seq\":9,\"ack\":[],\"msgs\":[", "]}", true, 9, 0},
	    /* a real, a leading zero, a number too large */
	    {"{\"v\":1,\"from\":\"abc\",\"boot\":5,\"seq\":9.0,\"msgs\":[", "]}", false, 0, 0},
	    {"{\"v\":1,\"from\":\"abc\",\"boot\":05,\"seq\":9,\"msgs\":[", "]}", false, 0, 0},
	    {"{\"v\":1,\"from\":\"abc\",\"boot\":5,\"seq\":9223372036854775808,\"msgs\":[", "]}", false, 0, 0},
	    /* text after the envelope */
	    {"{\"v\":1,\"from\":\"abc\",\"boot\":5,\"seq\":9,\"msgs\":[", "]}x", false, 0, 0},
	    {"{\"v\":1,\"from\":\"abc\",\"boot\":5,\"seq\":9,\"msgs\":[", "]} ", true, 9, 0},
	    /* the writer's order with a value decode_env() refuses: the fast
	     * reader must leave each to the general one, which refuses it */
	    {"{\"v\":3,\"from\":\"abc\",\"boot\":5,\"seq\":9,\"msgs\":[", "]}", false, 0, 0},
	    {"{\"v\":1,\"from\":\"\",\"boot\":5,\"seq\":9,\"msgs\":[", "]}", false, 0, 0},
	    {"{\"v\":1,\"from\":\"abc\",\"boot\":0,\"seq\":9,\"msgs\":[", "]}", false, 0, 0},
	    {"{\"v\":1,\"from\":\"abc\",\"boot\":5,\"seq\":0,\"msgs\":[", "]}", false, 0, 0},
	    {"{\"v\":1,\"from\":\"abc\",\"boot\":-5,\"seq\":9,\"msgs\":[", "]}", false, 0, 0},
	    {"{\"v\":1,\"from\":\"abc\",\"boot\":5,\"seq\":9,\"to_boot\":-1,\"msgs\":[", "]}", false, 0, 0},
	    {"{\"v\":1,\"from\":\"abc\",\"boot\":5,\"seq\":9,\"re\":-1,\"msgs\":[", "]}", false, 0, 0},
	    {"{\"v\":1,\"from\":\"abc\",\"boot\":5,\"seq\":9,\"ack\":[2,1],\"msgs\":[", "]}", false, 0, 0},
	    {"{\"v\":1,\"from\":\"abc\",\"boot\":5,\"seq\":9,\"ack\":[1,2,],\"msgs\":[", "]}", false, 0, 0},
	    {"{\"v\":1,\"from\":\"abc\",\"boot\":5,\"seq\":9,\"ack\":[1,1,2,2,3,3,4,4,5,5,6,6,7,7,8,8,9,9,10,10,"
	     "11,11,12,12,13,13,14,14,15,15,16,16,17,17],\"msgs\":[",
	     "]}", false, 0, 0},
	    {"{\"v\":1,\"from\":\"abc\",\"boot\":5,\"seq\":9,\"ack\":[1,1,2,2,3,3,4,4,5,5,6,6,7,7,8,8,9,9,10,10,"
	     "11,11,12,12,13,13,14,14,15,15,16,16],\"msgs\":[",
	     "]}", true, 9, 16},
	    /* any "dw" but 1 is no durable window; "msgs" must be a list */
	    {"{\"v\":1,\"from\":\"abc\",\"boot\":5,\"seq\":9,\"dw\":-1,\"msgs\":[", "]}", true, 9, 0},
	    {"{\"v\":1,\"from\":\"abc\",\"boot\":5,\"seq\":9,\"msgs\":{\"a\":", "}}", false, 0, 0},
	    /* numbers of 16 to 19 digits, as boots (microseconds) are */
	    {"{\"v\":1,\"from\":\"abc\",\"boot\":5,\"seq\":1234567890123456,\"msgs\":[", "]}", true,
	     1234567890123456ull, 0},
	    {"{\"v\":1,\"from\":\"abc\",\"boot\":5,\"seq\":12345678901234567,\"msgs\":[", "]}", true,
	     12345678901234567ull, 0},
	    {"{\"v\":1,\"from\":\"abc\",\"boot\":5,\"seq\":123456789012345678,\"msgs\":[", "]}", true,
	     123456789012345678ull, 0},
	    {"{\"v\":1,\"from\":\"abc\",\"boot\":5,\"seq\":9223372036854775807,\"msgs\":[", "]}", true,
	     9223372036854775807ull, 0},
	};
	struct wire_codec c = plain_codec();
	struct wire_decoder *kept;
	char text[1024];

	(void)state;
	assert_int_equal(wire__decoder_new(&c, &kept), 0);
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		for (int how = 0; how < 2; how++) {
			struct wire_datagram dg;
			tsync_reject rej;
			int r;
			size_t len = (size_t)snprintf(text, sizeof(text), "%s%s%s", cases[i].head, set, cases[i].tail);

			r = how ? wire__decode(&c, text, len, &dg, &rej) : wire__decode_in(kept, text, len, &dg, &rej);
			if ((r == 0) != cases[i].ok)
				fail_msg("%s: %d (%s)", text, r, tsync_reject_name(rej));
			if (r == 0) {
				assert_string_equal(dg.env.from, "abc");
				assert_int_equal(dg.env.from_len, 3);
				assert_int_equal(dg.env.boot, 5);
				/* the members the case has, and only those */
				assert_int_equal(dg.env.to_boot, strstr(text, "\"to_boot\":6") ? 6 : 0);
				assert_int_equal(dg.env.re, strstr(text, "\"re\":2") ? 2 : 0);
				assert_int_equal(dg.env.durable, strstr(text, "\"dw\":1") != NULL);
				assert_int_equal(dg.env.acks_ok, strstr(text, "\"ack\":") != NULL);
				for (uint32_t k = 0; k < dg.env.n_acks; k++)
					assert_true(dg.env.acks[k][0] <= dg.env.acks[k][1] && dg.env.acks[k][0] >= 1);
				assert_int_equal(dg.env.seq, cases[i].seq);
				assert_int_equal(dg.env.n_acks, cases[i].n_acks);
				assert_int_equal(dg.n_msgs, 1);
				assert_false(dg.msgs[0].bad);
				assert_string_equal(dg.msgs[0].io, "t0");
				assert_true(dg.msgs[0].val.u.i == 7 && dg.msgs[0].ver == 3);
			} else {
				assert_int_equal(rej, TSYNC_REJ_JSON);
			}
			wire__datagram_release(&dg);
		}
	}
	wire__decoder_free(kept);
}

/* A decoder keeps the text of the last boot and to_boot it read (9 to 16
 * digits) and compares instead of reading them again: a boot that differs
 * in any digit, is longer by a digit, or is followed by something else must
 * still be read as it is. */
static void test_boot_seen(void **state)
{
	static const struct {
		const char *boot, *to_boot;
		bool ok;
	} cases[] = {
	    {"1764800000123456", "1764800000654321", true},
	    {"1764800000123456", "1764800000654321", true},   /* both as seen */
	    {"1764800000123457", "1764800000654321", true},   /* the last digit */
	    {"2764800000123457", "1764800000654320", true},   /* the first; the last */
	    {"27648000001234570", "17648000006543200", true}, /* a digit more */
	    {"2764800000123457", "1764800000654320", true},
	    {"2764800000123457.5", "1", false},               /* a real: refused */
	    {"2764800000123457", "1764800000654320", true},
	    {"2764800000123457", "176480000065432", true},    /* a digit fewer */
	    {"123456789", "0", true},
	    {"123456789", "012", false},
	    {"123456789", "1", true},
	    {"0123456789", "1", false},
	};
	struct wire_codec c = plain_codec();
	struct wire_decoder *d;
	char text[512];

	(void)state;
	assert_int_equal(wire__decoder_new(&c, &d), 0);
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		struct wire_datagram dg;
		tsync_reject rej;
		size_t len = (size_t)snprintf(text, sizeof(text),
		                              "{\"v\":1,\"from\":\"abc\",\"boot\":%s,\"seq\":9,\"to_boot\":%s,\"msgs\":[]}",
		                              cases[i].boot, cases[i].to_boot);
		int r = wire__decode_in(d, text, len, &dg, &rej);
		if ((r == 0) != cases[i].ok)
			fail_msg("%s: %d", text, r);
		if (r == 0) {
			assert_true(dg.env.boot == strtoull(cases[i].boot, NULL, 10));
			assert_true(dg.env.to_boot == strtoull(cases[i].to_boot, NULL, 10));
		}
		wire__datagram_release(&dg);
	}
	wire__decoder_free(d);
}

/* The fast readers (decode.c: parse_env_fast(), parse_set_fast(),
 * fast_int(), boot_int()) against the general one, on the numbers at their
 * edges (16 to 21 digits, 2^63 and 2^64 and around them, leading zeros,
 * "-0", reals and exponents, a lone sign) in every integer place of the
 * writer's envelope and of a set. The writer's shape is read the fast way;
 * the same text with a space after each '{' only the general way: both must
 * give the same verdict, the same reason and the same members. The fast
 * text goes twice through a kept decoder (the second time its boots are
 * compared, not read; the defaults' boots with a digit more test that
 * compare), the general one through a fresh decoder. */
static const char *const edge_numbers[] = {
    "0", "-0", "1", "-1", "00", "01", "-01", "-", "1.0", "1e3", "1E+2", "-0.0", "1.", "12345678",
    "123456789", "-12345678", "123456789012345", "1234567890123456", "-1234567890123456",
    "1764800000123456", "1764800000123456.5", "1764800000123456e0", "01764800000123456", "17648000001234560",
    "17648000006543210", "17648000001234561234", "12345678901234567",
    "123456789012345678", "999999999999999999", "-999999999999999999", "1000000000000000000",
    "9223372036854775806", "9223372036854775807", "9223372036854775808", "-9223372036854775807",
    "-9223372036854775808", "-9223372036854775809", "9999999999999999999", "10000000000000000000",
    "18446744073709551615", "18446744073709551616", "-18446744073709551615", "99999999999999999999",
    "100000000000000000000", "123456789012345678901", "0000000000000000001", "1764800000123456 "};

static void same_decoded(const char *text, int ra, tsync_reject wa, const struct wire_datagram *a, int rb,
                         tsync_reject wb, const struct wire_datagram *b)
{
	if ((ra < 0) != (rb < 0) || (ra < 0 && wa != wb))
		fail_msg("%s: fast %d/%s, general %d/%s", text, ra, tsync_reject_name(wa), rb, tsync_reject_name(wb));
	if (ra < 0)
		return;
	if (strcmp(a->env.from, b->env.from) != 0 || a->env.from_len != b->env.from_len ||
	    a->env.boot != b->env.boot || a->env.seq != b->env.seq || a->env.to_boot != b->env.to_boot ||
	    a->env.re != b->env.re || a->env.durable != b->env.durable || a->env.acks_ok != b->env.acks_ok ||
	    a->env.n_acks != b->env.n_acks || a->n_msgs != b->n_msgs)
		fail_msg("%s: the envelopes differ", text);
	for (uint32_t k = 0; k < a->env.n_acks; k++)
		if (a->env.acks[k][0] != b->env.acks[k][0] || a->env.acks[k][1] != b->env.acks[k][1])
			fail_msg("%s: ack range %u differs", text, k);
	for (size_t k = 0; k < a->n_msgs; k++) {
		const struct wire_msg *x = &a->msgs[k], *y = &b->msgs[k];
		if (x->bad != y->bad || (x->bad && x->reject != y->reject) || x->type != y->type || x->op != y->op ||
		    x->has_val != y->has_val || x->has_ver != y->has_ver || x->ver != y->ver ||
		    (x->has_val && (x->val.type != y->val.type || x->val.u.i != y->val.u.i)) ||
		    (x->io && strcmp(x->io, y->io) != 0))
			fail_msg("%s: message %zu differs", text, k);
	}
}

/* The datagram of fill_envelope(), its place `at` (0-9) holding number: the
 * envelope's "v", boot, seq, to_boot, re, dw, the ack pair's first and last,
 * the set's val and ver. sp is "" (the writer's shape) or " ". */
static size_t edge_text(char *text, size_t cap, const char *sp, const char *from, int at, const char *number)
{
	const char *v[10] = {"1", "1764800000123456", "9", "1764800000654321", "3", "1", "1", "2", "7", "3"};

	v[at] = number;
	return (size_t)snprintf(text, cap,
	                        "{%s\"v\":%s,\"from\":\"%s\",\"boot\":%s,\"seq\":%s,\"to_boot\":%s,\"re\":%s,\"dw\":%s,"
	                        "\"ack\":[%s,%s],\"msgs\":[{%s\"type\":\"io\",\"cmd\":\"set\",\"io\":\"t0\",\"val\":%s,"
	                        "\"ver\":%s},{%s\"type\":\"io\",\"cmd\":\"set\",\"io\":\"t1\",\"val\":%s,\"ver\":%s}]}",
	                        sp, v[0], from, v[1], v[2], v[3], v[4], v[5], v[6], v[7], sp, v[8], v[9], sp, v[8],
	                        v[9]);
}

static void test_fast_numbers_as_general(void **state)
{
	static const char *const froms[] = {"ab", "a\\u0062", "a\\\"b", "", "\\u00e9",
	                                    "nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn",
	                                    "nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn"};
	struct wire_codec c = plain_codec();
	struct wire_decoder *kept;
	char fast[1024], general[1024];
	size_t checked = 0, accepted = 0;

	(void)state;
	assert_int_equal(wire__decoder_new(&c, &kept), 0);
	for (size_t f = 0; f < ARRAY_SIZE(froms); f++) {
		for (int at = 0; at < 10; at++) {
			for (size_t n = 0; n < ARRAY_SIZE(edge_numbers); n++) {
				struct wire_datagram a, b;
				tsync_reject wa, wb;
				size_t la = edge_text(fast, sizeof(fast), "", froms[f], at, edge_numbers[n]);
				size_t lb = edge_text(general, sizeof(general), " ", froms[f], at, edge_numbers[n]);
				int rb = wire__decode(&c, general, lb, &b, &wb);

				for (int again = 0; again < 2; again++) {
					int ra = wire__decode_in(kept, fast, la, &a, &wa);
					same_decoded(fast, ra, wa, &a, rb, wb, &b);
					accepted += ra == 0;
					wire__datagram_release(&a);
				}
				wire__datagram_release(&b);
				checked++;
			}
		}
	}
	/* Both verdicts were taken: the list is no list of refusals only. */
	assert_true(accepted > checked / 4 && accepted < 2 * checked);
	wire__decoder_free(kept);
}

/* ------------------------------------------------------------------ replay window */

static void test_replay_in_order_and_duplicates(void **state)
{
	struct wire_replay r = {0};

	/* Nothing seen: any boot is new; (0, 0) is the window's own top. */
	assert_int_equal(wire__replay_check(&r, 1, 1), 0);
	assert_int_equal(wire__replay_check(&r, 0, 0), -1);
	assert_int_equal(wire__replay_check(&r, 0, 1), 0);
	for (uint64_t s = 1; s <= 200; s++) {
		assert_int_equal(wire__replay_check(&r, 1, s), 0);
		wire__replay_update(&r, 1, s);
		assert_int_equal(wire__replay_check(&r, 1, s), -1);
		assert_int_equal(wire__replay_check(&r, 1, s - 1 ? s - 1 : s), -1);
	}
	assert_int_equal(r.top, 200);
	assert_int_equal(wire__replay_check(&r, 1, 137), -1);
	assert_int_equal(wire__replay_check(&r, 1, 1), -1);
	assert_int_equal(wire__replay_check(&r, 1, 201), 0);
	assert_int_equal(wire__replay_check(&r, 1, 0), -1);
}

static void test_replay_out_of_order(void **state)
{
	struct wire_replay r = {0};

	wire__replay_update(&r, 5, 100);
	/* Holes within the window stay acceptable, once each. */
	assert_int_equal(wire__replay_check(&r, 5, 99), 0);
	assert_int_equal(wire__replay_check(&r, 5, 37), 0);  /* top - 63 */
	assert_int_equal(wire__replay_check(&r, 5, 36), -1); /* top - 64: too old */
	assert_int_equal(wire__replay_check(&r, 5, 1), -1);
	wire__replay_update(&r, 5, 37);
	wire__replay_update(&r, 5, 80);
	assert_int_equal(wire__replay_check(&r, 5, 37), -1);
	assert_int_equal(wire__replay_check(&r, 5, 80), -1);
	assert_int_equal(wire__replay_check(&r, 5, 81), 0);
	assert_int_equal(wire__replay_check(&r, 5, 100), -1);
	/* A newer seq slides the window: 37 and 80 are remembered where they
	 * still fit. */
	wire__replay_update(&r, 5, 110);
	assert_int_equal(r.top, 110);
	assert_int_equal(wire__replay_check(&r, 5, 100), -1);
	assert_int_equal(wire__replay_check(&r, 5, 80), -1);
	assert_int_equal(wire__replay_check(&r, 5, 81), 0);
	assert_int_equal(wire__replay_check(&r, 5, 47), 0);
	assert_int_equal(wire__replay_check(&r, 5, 46), -1);
	assert_int_equal(wire__replay_check(&r, 5, 105), 0);
	/* An update of something too old changes nothing. */
	wire__replay_update(&r, 5, 10);
	assert_int_equal(r.top, 110);
	assert_int_equal(wire__replay_check(&r, 5, 105), 0);
}

static void test_replay_boots(void **state)
{
	struct wire_replay r = {0};

	wire__replay_update(&r, 3, 500);
	wire__replay_update(&r, 3, 499);
	/* A newer boot starts over, whatever its seq. */
	assert_int_equal(wire__replay_check(&r, 4, 1), 0);
	wire__replay_update(&r, 4, 1);
	assert_int_equal(r.boot, 4);
	assert_int_equal(r.top, 1);
	assert_int_equal(r.bits, 1);
	assert_int_equal(wire__replay_check(&r, 4, 1), -1);
	assert_int_equal(wire__replay_check(&r, 4, 2), 0);
	/* The old boot is over, even for seqs never seen. */
	assert_int_equal(wire__replay_check(&r, 3, 501), -1);
	assert_int_equal(wire__replay_check(&r, 3, 1), -1);
	wire__replay_update(&r, 3, 501);
	assert_int_equal(r.boot, 4);
	assert_int_equal(r.top, 1);
	assert_int_equal(wire__replay_check(&r, UINT64_MAX, 1), 0);
}

static void test_replay_big_jumps(void **state)
{
	struct wire_replay r = {0};

	wire__replay_update(&r, 1, 10);
	wire__replay_update(&r, 1, 9);
	/* A jump of exactly 64 pushes everything out (no shift by 64). */
	wire__replay_update(&r, 1, 74);
	assert_int_equal(r.bits, 1);
	assert_int_equal(wire__replay_check(&r, 1, 10), -1);
	assert_int_equal(wire__replay_check(&r, 1, 11), 0);
	/* 63 keeps the old top at the far end of the window. */
	wire__replay_update(&r, 1, 137);
	assert_int_equal(r.bits, 1 | (UINT64_C(1) << 63));
	assert_int_equal(wire__replay_check(&r, 1, 74), -1);
	assert_int_equal(wire__replay_check(&r, 1, 75), 0);
	/* Far beyond. */
	wire__replay_update(&r, 1, 1000000);
	assert_int_equal(r.bits, 1);
	assert_int_equal(wire__replay_check(&r, 1, 137), -1);
	assert_int_equal(wire__replay_check(&r, 1, 999999), 0);
	wire__replay_update(&r, 1, UINT64_MAX);
	assert_int_equal(r.bits, 1);
	assert_int_equal(wire__replay_check(&r, 1, UINT64_MAX), -1);
	assert_int_equal(wire__replay_check(&r, 1, UINT64_MAX - 1), 0);
	assert_int_equal(wire__replay_check(&r, 1, UINT64_MAX - 64), -1);
	assert_int_equal(wire__replay_check(&r, 1, 1000000), -1);
}

/* ------------------------------------------------------------------ names, release */

static void test_names_and_release(void **state)
{
	struct wire_datagram dg;

	assert_string_equal(wire__op_name(WIRE_OP_SET), "set");
	assert_string_equal(wire__op_name(WIRE_OP_REPLY), "reply");
	assert_string_equal(wire__op_name(WIRE_OP_ASK), "ask");
	assert_string_equal(wire__op_name(WIRE_OP_PULSE), "pulse");
	assert_string_equal(wire__op_name(WIRE_OP_REPLY_PULSE), "reply_pulse");
	assert_string_equal(wire__reject_name(TSYNC_REJ_JSON), "err_ip_in_json_req");
	assert_string_equal(wire__reject_name(TSYNC_REJ_VAL), "err_ip_in_val");
	assert_string_equal(wire__reject_name(TSYNC_REJ_AUTH), tsync_reject_name(TSYNC_REJ_AUTH));

	memset(&dg, 0, sizeof(dg));
	wire__datagram_release(&dg);
	wire__datagram_release(&dg);
	assert_null(dg.root);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_roundtrip_io),
	    cmocka_unit_test(test_roundtrip_cmd_cum_other),
	    cmocka_unit_test(test_envelope_text_and_legacy),
	    cmocka_unit_test(test_durable_window_fields),
	    cmocka_unit_test(test_seed_legacy_list),
	    cmocka_unit_test(test_seed_val_null),
	    cmocka_unit_test(test_string_escaping),
	    cmocka_unit_test(test_float_format),
	    cmocka_unit_test(test_int_limits),
	    cmocka_unit_test(test_encode_refuses_invalid),
	    cmocka_unit_test(test_emsgsize_keeps_writer),
	    cmocka_unit_test(test_acks_in_envelope),
	    cmocka_unit_test(test_batch_messages_text),
	    cmocka_unit_test(test_numbers_text),
	    cmocka_unit_test(test_int_reader_bytes),
	    cmocka_unit_test(test_name_bytes_text),
	    cmocka_unit_test(test_name_ends_anywhere),
	    cmocka_unit_test(test_batch_messages_read),
	    cmocka_unit_test(test_full_datagram_fits),
	    cmocka_unit_test(test_sets_fill_exactly),
	    cmocka_unit_test(test_writer_max_msgs),
	    cmocka_unit_test(test_add_raw_same_bytes),
	    cmocka_unit_test(test_oversize_datagram),
	    cmocka_unit_test(test_too_many_msgs),
	    cmocka_unit_test(test_malformed_json),
	    cmocka_unit_test(test_bad_envelope),
	    cmocka_unit_test(test_duplicate_keys),
	    cmocka_unit_test(test_bad_message_among_good),
	    cmocka_unit_test(test_bad_message_fields_kept),
	    cmocka_unit_test(test_auth),
	    cmocka_unit_test(test_auth_v2),
	    cmocka_unit_test(test_envelope_fast_and_fallback),
	    cmocka_unit_test(test_boot_seen),
	    cmocka_unit_test(test_fast_numbers_as_general),
	    cmocka_unit_test(test_envelope_text_fast),
	    cmocka_unit_test(test_envelope_kept_head),
	    cmocka_unit_test(test_kept_head_new_key),
	    cmocka_unit_test(test_number_groups),
	    cmocka_unit_test(test_add_raw_runs),
	    cmocka_unit_test(test_replay_in_order_and_duplicates),
	    cmocka_unit_test(test_replay_out_of_order),
	    cmocka_unit_test(test_replay_boots),
	    cmocka_unit_test(test_replay_big_jumps),
	    cmocka_unit_test(test_names_and_release),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
