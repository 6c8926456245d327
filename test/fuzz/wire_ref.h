/*
 * The jansson datagram reader that lib/wire/decode.c replaced, kept as the
 * reference of the differential fuzzer (see wire_ref.c). Same contract as
 * wire__decode(); dg->root is its jansson tree, dg->msgs its own array.
 * SPDX-License-Identifier: MIT
 */
#ifndef TSYNC_WIRE_REF_H
#define TSYNC_WIRE_REF_H

#include "wire/wire.h"

int wire_ref__decode(const struct wire_codec *c, const void *buf, size_t len, struct wire_datagram *dg,
                     tsync_reject *reject);
void wire_ref__release(struct wire_datagram *dg);

#endif
