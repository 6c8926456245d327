/*
 * lib/wire: the datagram format. Encoding (a size-aware JSON writer),
 * decoding (a JSON reader of its own that does not allocate, equivalent to
 * jansson's; jansson only for the objects of generic requests), authentication (libsodium crypto_auth) and the replay
 * window. It knows the shape of messages, not what they mean: lib/sync does.
 *
 * A datagram is either
 *   - an envelope: {"v":3,"from":NAME,"boot":B,"seq":S,"to_boot":T,"re":R,
 *                   "dw":1,"msgs":[MSG,...]}   followed, with a site key, by the
 *     32-byte tag of everything before it (auth.c); "v":1 without a key; or
 *   - legacy (the seed's format, only without a site key): [MSG,...]
 * and a message is one of the seed's objects, e.g.
 *   {"type":"io","cmd":"set","io":"is_armed","val":1,"ver":12}
 *   {"type":"io","cmd":"reply","io":"is_armed","val":1,"ver":12}
 *   {"type":"io","cmd":"ask","io":"is_armed"}
 *   {"type":"io","cmd":"pulse","io":"door","val":1,"ms":500,"id":7}
 *   {"type":"io","cmd":"reply_pulse","io":"door","re":7}
 *   {"type":"cmd","role":"cmd_do","cmd":"version","kwargs":{},"id":8}
 *   {"type":"cmd","role":"cmd_do","cmd":"version","re":8,"res":"0.1.0"}
 *   {"type":"cum","fld":"is_alarm","id":9}   {"type":"cum","re":9,"res":{...}}
 * "id" numbers a request the sender repeats until answered; "re" names the
 * request an answer is for; "ver" is the owner's version of a value; "err"
 * carries a seed error name in an answer that refuses.
 * "dw":1 in an envelope says that its sender keeps durable windows: the ids
 * of the requests it executed, and their answers, survive its restarts, so a
 * request unanswered when it restarted may be sent again to its next boot.
 * "ob" on a request names the sender's boot that first issued it (its origin
 * boot), when that is not the boot in the envelope: a sender that restarted
 * resumes its unanswered requests under their first (origin boot, id).
 * "ack":[F1,L1,F2,L2,...] in an envelope acknowledges the sets of whole
 * datagrams: every set in the receiver's datagrams of seq F1..L1, F2..L2, ...
 * (of the receiver's boot that the envelope's to_boot names) is held by the
 * sender, as a "reply" with the set's "ver" would say, one per set. Its
 * presence, even empty ("ack":[]), says that the sender takes such
 * acknowledgements; a node sends them only to a peer that said so, so that a
 * node without them (which ignores the member) still gets replies.
 * SPDX-License-Identifier: MIT
 */
#ifndef TSYNC_WIRE_H
#define TSYNC_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <thingsync/node.h>

#include "util/util.h"

#define WIRE_TAG_BYTES 32 /* a 16-byte nonce and a 16-byte Poly1305 tag (auth.c) */
#define WIRE_KEY_BYTES 32 /* the site key */
/* The envelope's "v": 3 with a site key (the XChaCha20-Poly1305 tag of
 * auth.c, its nonce laid out so that senders' subkeys can be kept; 2 had
 * the counter in the HChaCha20 part, 1 was HMAC-SHA-512-256), 1 without
 * (nothing else changed). */
#define WIRE_VERSION       3
#define WIRE_VERSION_PLAIN 1
#define WIRE_NAME_MAX 63      /* bytes of a name: "from", "io", "role", "cmd", "type" */
#define WIRE_MS_MAX 86400000u /* longest pulse, "ms" */
#define WIRE_ACK_RANGES 16    /* ranges of seqs in one envelope's "ack" */

enum wire_type {
	WIRE_T_IO = 0,
	WIRE_T_CMD,
	WIRE_T_CUM,
	WIRE_T_CLIM,
	WIRE_T_OTHER, /* any other "type" string: connection_status, recovery_*, ... */
};

enum wire_op { /* the "cmd" of an io message */
	WIRE_OP_NONE = 0,
	WIRE_OP_SET,
	WIRE_OP_REPLY,
	WIRE_OP_ASK,
	WIRE_OP_PULSE,
	WIRE_OP_REPLY_PULSE,
};

/*
 * One message. Decoding fills it with pointers borrowed from the datagram
 * (valid until wire__datagram_release()); encoding reads it.
 */
struct wire_msg {
	/* The small members first, together: the decoder fills a whole
	 * message for every set of a batch (decode.c, parse_set_fast()), and
	 * packed so it is 136 bytes instead of 176. */
	enum wire_type type;
	enum wire_op op; /* io only */
	uint32_t ms;     /* pulse duration, 0 if absent */
	tsync_reject reject;
	bool has_val, has_ver, has_id, has_re;
	bool bad; /* decoding only: malformed, for `reject` (below, obj) */
	/* Decoding only: strlen(io) where the decoder knew it without a walk
	 * (every set of a batch), else 0. Then io points into the decoder's
	 * text, which has 8 bytes of room after its end: 8 bytes at io may be
	 * read at once (lib/sync compares a short name so). */
	uint8_t io_len;

	const char *type_name; /* the "type" string (decoded; for WIRE_T_OTHER when encoding) */
	const char *io;        /* io: "io", the thing name */

	tsync_value val; /* as found in JSON: bool, int, float or string; no coercion */
	uint64_t ver;
	uint64_t id;
	uint64_t re;
	uint64_t ob; /* a request's origin boot, 0 if absent (then the envelope's boot) */

	const char *err;  /* seed error name in a refusing answer, or NULL */
	const char *role; /* cmd */
	const char *cmd;  /* cmd: the command name */

	/* Encoding only: extra members as a compact JSON object text ("{...}")
	 * merged into the message, and an answer ("res") as any JSON text. */
	const char *body;
	const char *res;

	/* Decoding only: the whole message object (json_t *, owned by the
	 * datagram) for handlers that want all of it — set for the messages
	 * that are neither io nor bad, NULL for the others — and why it is
	 * malformed (bad, reject), if it is. */
	void *obj;
};

struct wire_env {
	bool legacy; /* a plain seed list: no envelope, no tag */
	const char *from;
	uint32_t from_len; /* decoded: strlen(from) (encoding: not read) */
	uint64_t boot;    /* sender's boot counter */
	uint64_t seq;     /* sender's datagram number within that boot (from 1) */
	uint64_t to_boot; /* receiver's boot as the sender knows it (0: unknown) */
	uint64_t re;      /* seq of the datagram this one answers (0: none), for RTT */
	bool durable;     /* "dw": the sender keeps durable windows (see above) */
	bool acks_ok;     /* "ack" present: the sender takes acknowledgements by datagram */
	uint32_t n_acks;  /* ranges in acks[] */
	/* first, last seq (first <= last, both >= 1); only n_acks are set
	 * (decoding leaves the rest as they were). Last: see decode.c. */
	uint64_t acks[WIRE_ACK_RANGES][2];
};

/* The MAC key derived from the site key once (wire__auth_prepare), instead
 * of for every datagram. */
struct wire_auth_key;

/* What the codec needs to know; borrowed by it. */
struct wire_codec {
	const uint8_t *key;    /* WIRE_KEY_BYTES, or NULL for no authentication */
	uint32_t max_datagram; /* bytes, tag included */
	uint32_t max_msgs;     /* messages per datagram */
	uint32_t max_string;   /* bytes of any string field */
	/* The same key, prepared; NULL: use `key` as it is. It keeps subkeys
	 * (auth.c), so a codec with one is used by one thread at a time. */
	struct wire_auth_key *auth;
};

struct wire_datagram {
	struct wire_env env;
	struct wire_msg *msgs;
	size_t n_msgs;
	void *root; /* wire__decode()'s own decoder, owned; NULL from wire__decode_in() */
};

/* A reader of datagrams with its buffers allocated once, for a codec's
 * max_datagram and max_msgs: decoding with it allocates nothing but the
 * objects of messages that are not io (see wire_msg.obj). */
struct wire_decoder;

/*
 * Decodes and authenticates one datagram.
 *
 * With a key, the datagram must be an envelope with a valid tag; without, an
 * envelope or a legacy list. A message that is malformed does not fail the
 * datagram: it is kept with bad = true and its reason, so its neighbours are
 * still acted on.
 *
 * Returns 0, or a negative value with *reject set: TSYNC_REJ_OVERSIZE (over
 * max_datagram or max_msgs), TSYNC_REJ_AUTH (tag missing or wrong; legacy
 * list with a key), TSYNC_REJ_JSON (not JSON, or a bad envelope). The
 * datagram needs wire__datagram_release() either way.
 * (The negative value is -EBADMSG for a rejection, -ENOMEM with *reject =
 * TSYNC_REJ_OVERSIZE when memory runs out.)
 */
int wire__decode(const struct wire_codec *c, const void *buf, size_t len, struct wire_datagram *dg,
                 tsync_reject *reject);
/* The same with a decoder (0 or -ENOMEM; it borrows c). The datagram's
 * messages and strings live in the decoder until its next decode or
 * wire__decoder_free(); the datagram still needs wire__datagram_release(). */
int wire__decoder_new(const struct wire_codec *c, struct wire_decoder **ret);
void wire__decoder_free(struct wire_decoder *d);
int wire__decode_in(struct wire_decoder *d, const void *buf, size_t len, struct wire_datagram *dg,
                    tsync_reject *reject);
void wire__datagram_release(struct wire_datagram *dg);

/* Builds one datagram, message by message, never over max_datagram. */
struct wire_writer {
	const struct wire_codec *codec;
	struct buf b;
	bool legacy;
	size_t n_msgs;
	size_t limit; /* max bytes of JSON, before the tag */
	size_t last;  /* where the last message added starts (after its comma) */
	/* The envelope's parts that stay while neither side restarts, as last
	 * written (encode.c, begin_fast()): {"v":..,"from":..,"boot":..,"seq":
	 * for (keyed, from, boot), and ,"to_boot":.. for to_boot. Each is
	 * written again when its values differ from the ones it was made of. */
	uint64_t head_boot, to_boot;
	/* wire__add_raw_comma()'s bytes not yet copied: run_len bytes from
	 * run_src, which end the datagram at b.len (0: none). While there is a
	 * run, run_next is where a message that goes on with it starts (NULL
	 * otherwise), and the run's checks are kept as their bounds: b.len may
	 * grow to run_end (the limit less the datagram's closing bytes), and
	 * n_msgs to run_max (max_msgs). */
	const char *run_src;
	size_t run_len;
	const char *run_next;
	size_t run_end, run_max;
	uint8_t head_len, head_nl, to_len; /* head_len 0: none yet */
	bool head_keyed;
	char head[128]; /* at most 113 bytes and 8 of room */
	char to[40]; /* 8 bytes more than written: the digits are stored 8 at a time */
};

void wire__writer_init(struct wire_writer *w, const struct wire_codec *c);
void wire__writer_free(struct wire_writer *w);

/* Starts a datagram (resets the writer). 0 or -ENOMEM; -EINVAL if env->from
 * is not a name of 1..63 bytes, boot or seq is 0, or a number is over
 * INT64_MAX (JSON integers are signed), or an ack range is not
 * 1 <= first <= last or there are over WIRE_ACK_RANGES (acks are written
 * only with acks_ok, never in a legacy list); -EMSGSIZE if max_datagram
 * cannot hold even the envelope. */
int wire__begin(struct wire_writer *w, const struct wire_env *env);

/* Appends a message. 0; -EMSGSIZE if it does not fit (the writer is
 * unchanged; a lone message too large for an empty datagram also gives
 * -EMSGSIZE, so callers check n_msgs), or if the datagram already holds
 * max_msgs; -ENOMEM. -EINVAL (writer unchanged) for a message the decoder
 * would not accept: a missing or over-long (> 63 bytes) name, an op out of
 * range, set without val, a string over max_string or not UTF-8, a float
 * that is not finite, ms over 86400000, a number over INT64_MAX, a body not
 * "{...}". body's members must not repeat a member the writer emits (the
 * receiver rejects duplicate keys), and res must be valid JSON: neither is
 * parsed here. */
int wire__add(struct wire_writer *w, const struct wire_msg *m);

/* Copies what wire__add_raw_comma() left to copy (see there). */
void wire__run_copy(struct wire_writer *w);

/* The bytes of the message the last successful wire__add() or
 * wire__add_raw_comma() wrote (without the comma before it), valid until
 * the writer's next call. */
static inline const char *wire__last_msg(struct wire_writer *w, size_t *len)
{
	if (w->run_len)
		wire__run_copy(w);
	*len = w->b.len - w->last;
	return w->b.data + w->last;
}

/*
 * Appends a message exactly as wire__last_msg() gave it from a writer of
 * the same codec: the same bytes again, for another peer's datagram,
 * without writing them anew. 0; -EMSGSIZE as wire__add() (writer
 * unchanged). The bytes are not checked again: pass only what a writer
 * wrote. The byte before msg must be a ',' of the same buffer (the engine
 * keeps a pass's sets so, one after another). The copy waits: while each
 * message follows the one before in that buffer, as they follow in the
 * datagram, the messages are copied together by one memcpy() when the run
 * ends (at the next call but this one, wire__last_msg() or wire__finish()).
 * The buffer must stay as it is until then.
 */
int wire__add_raw_comma_slow(struct wire_writer *w, const char *msg, size_t len);
static inline int wire__add_raw_comma(struct wire_writer *w, const char *msg, size_t len)
{
	/* The run goes on: the same room checks as the slow part's, by the
	 * bounds kept when the run began (b.len <= run_end while it lasts). */
	if (msg == w->run_next && w->n_msgs < w->run_max && len + 1 <= w->run_end - w->b.len) {
		w->last = w->b.len + 1;
		w->b.len += 1 + len;
		w->run_len += 1 + len;
		w->run_next = msg + len + 1;
		w->n_msgs++;
		return 0;
	}
	return wire__add_raw_comma_slow(w, msg, len);
}

/* Closes the datagram and appends the tag. *out stays valid until the next
 * wire__begin() or wire__writer_free(). 0 or -ENOMEM; -EIO if libsodium
 * cannot initialise. Call it once per wire__begin(). */
int wire__finish(struct wire_writer *w, const void **out, size_t *len);

/*
 * The replay window of one sender: the newest boot seen, and within it the
 * newest seq and a bitmap of the 64 before it (as IPsec's).
 */
struct wire_replay {
	uint64_t boot;
	uint64_t top;
	uint64_t bits;
};

/* 0 if (boot, seq) is new; TSYNC_REJ_REPLAY-style negative -1 if seen or too
 * old, or from an older boot. Does not record it. */
int wire__replay_check(const struct wire_replay *r, uint64_t boot, uint64_t seq);
/* Records (boot, seq) as seen; call after the datagram authenticated. */
void wire__replay_update(struct wire_replay *r, uint64_t boot, uint64_t seq);

/* Authentication (auth.c): the tag of data under a WIRE_KEY_BYTES site
 * key, a fresh nonce and its XChaCha20-Poly1305 tag. 0, -EBADMSG (verify:
 * wrong tag), -EIO (libsodium failed to initialise). */
int wire__auth_tag(const uint8_t *key, const void *data, size_t len, uint8_t tag[WIRE_TAG_BYTES]);
int wire__auth_verify(const uint8_t *key, const void *data, size_t len, const uint8_t tag[WIRE_TAG_BYTES]);
/* The same with a codec: its prepared key if it has one. */
int wire__codec_tag(const struct wire_codec *c, const void *data, size_t len, uint8_t tag[WIRE_TAG_BYTES]);
int wire__codec_verify(const struct wire_codec *c, const void *data, size_t len,
                       const uint8_t tag[WIRE_TAG_BYTES]);
/* Prepares a key (0, -ENOMEM, -EIO); free with wire__auth_free (NULL ok). */
int wire__auth_prepare(const uint8_t key[WIRE_KEY_BYTES], struct wire_auth_key **ret);
void wire__auth_free(struct wire_auth_key *k);

/* Whether s is UTF-8 that the receiver's JSON parser accepts. */
bool wire__utf8_valid(const char *s);
/* Length of the valid UTF-8 sequence at s (first byte >= 0x80; s ends with
 * a NUL or a byte that is no continuation), or 0: overlong forms, surrogates
 * and code points over U+10FFFF are not valid, as in jansson. */
size_t wire__utf8_seq(const unsigned char *s);

/* Names used on the wire. */
const char *wire__op_name(enum wire_op op);
/* The seed error name for a rejection (same as tsync_reject_name()). */
const char *wire__reject_name(tsync_reject r);

#endif /* TSYNC_WIRE_H */
