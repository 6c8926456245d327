/*
 * Unit tests of lib/site: site.conf parsing and validation, the key file,
 * value checks and the per-controller plan.
 * SPDX-License-Identifier: MIT
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "site/site.h"

#define EXAMPLE TEST_SRCDIR "/../../site.conf.example"

/* ---- helpers ------------------------------------------------------------ */

/* A private directory in /tmp holding site.conf and whatever else a test writes. */
struct tmp {
	char dir[64];
	char conf[128];
};

static void tmp_make(struct tmp *t)
{
	snprintf(t->dir, sizeof(t->dir), "/tmp/test_site.XXXXXX");
	assert_non_null(mkdtemp(t->dir));
	snprintf(t->conf, sizeof(t->conf), "%s/site.conf", t->dir);
}

static void tmp_clean(struct tmp *t)
{
	DIR *d = opendir(t->dir);
	struct dirent *e;
	char path[512];

	assert_non_null(d);
	while ((e = readdir(d)) != NULL) {
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		snprintf(path, sizeof(path), "%s/%s", t->dir, e->d_name);
		unlink(path);
	}
	closedir(d);
	assert_int_equal(rmdir(t->dir), 0);
}

static void write_file(const char *path, const char *text, mode_t mode)
{
	size_t len = strlen(text);
	int fd;

	unlink(path);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
	assert_true(fd >= 0);
	assert_int_equal(fchmod(fd, mode), 0);
	assert_int_equal(write(fd, text, len), (ssize_t)len);
	assert_int_equal(close(fd), 0);
}

static int load_text(struct tmp *t, const char *text, tsync_site **site, char **errors)
{
	write_file(t->conf, text, 0644);
	return tsync_site_load(t->conf, site, errors);
}

/* Whether some line of `errors` is `PATH:LINE: ...phrase...`. */
static bool has_error(const char *errors, const char *path, int line, const char *phrase)
{
	char prefix[256];
	const char *p = errors;

	if (!errors)
		return false;
	snprintf(prefix, sizeof(prefix), "%s:%d: ", path, line);
	while (*p) {
		const char *nl = strchr(p, '\n');
		size_t len = nl ? (size_t)(nl - p) : strlen(p);
		char one[1024];

		snprintf(one, sizeof(one), "%.*s", (int)len, p);
		if (!strncmp(one, prefix, strlen(prefix)) && strstr(one, phrase))
			return true;
		p += len + (nl ? 1 : 0);
	}
	return false;
}

static size_t count_lines(const char *text)
{
	size_t n = 0;

	for (; text && *text; text++)
		n += *text == '\n';
	return n;
}

/* Three controllers A, B, C on lines 1..11; bad cases add sections from line 12. */
static const char base[] = "[site]\n"           /* 1 */
                           "name = test\n"      /* 2 */
                           "[controller A]\n"   /* 3 */
                           "host = 127.0.0.1\n" /* 4 */
                           "udp_port = 6001\n"  /* 5 */
                           "[controller B]\n"   /* 6 */
                           "host = 127.0.0.1\n" /* 7 */
                           "udp_port = 6002\n"  /* 8 */
                           "[controller C]\n"   /* 9 */
                           "host = 127.0.0.1\n" /* 10 */
                           "udp_port = 6003\n"; /* 11 */

/* The controllers of `base`, for cases that need their own [site] section. */
#define CONTROLLERS "[controller A]\nhost = 127.0.0.1\nudp_port = 6001\n"

struct bad_case {
	const char *what;
	bool full; /* text is the whole file, not added to `base` */
	const char *text;
	int rc;
	int line;
	const char *phrase;
	size_t n_errors; /* exact number of error lines, or 0 for "any" */
};

static const struct bad_case bad_cases[] = {
    /* sections */
    {"unknown section type", false, "[gadget x]\nfoo = 1\n", TSYNC_ESITE, 12, "unknown section type 'gadget'",
     1},
    {"section without ]", false, "[thing a\nowner = A\n", TSYNC_ESITE, 12, "closing ']'", 1},
    {"controller without name", false, "[controller]\nhost = x\n", TSYNC_ESITE, 12,
     "[controller] section without a name", 1},
    {"duplicate controller", false, "[controller A]\nhost = 127.0.0.2\nudp_port = 7000\n", TSYNC_ESITE, 12,
     "duplicate controller 'A' (first at line 3)", 1},
    {"duplicate thing", false, "[thing a]\nowner = A\ntype = bool\n[thing a]\nowner = B\ntype = int\n",
     TSYNC_ESITE, 15, "duplicate thing 'a' (first at line 12)", 1},
    {"duplicate [site]", false, "[site]\nname = again\n", TSYNC_ESITE, 12, "duplicate [site] section", 1},
    {"[site] with a name", true, "[site x]\nname = t\n" CONTROLLERS, TSYNC_ESITE, 1, "[site] takes no name",
     1},
    {"bad thing name", false, "[thing bad/name]\nowner = A\ntype = bool\n", TSYNC_ESITE, 12,
     "thing 'bad/name': the name must be", 1},
    {"thing name too long", false,
     "[thing a234567890123456789012345678901234567890123456789012345678901234]\nowner = A\ntype = bool\n",
     TSYNC_ESITE, 12, "the name must be 1..63", 1},
    {"bad controller name", false, "[controller D E]\nhost = 127.0.0.1\nudp_port = 6004\n", TSYNC_ESITE, 12,
     "controller 'D E': the name must be", 1},
    {"missing [site]", true, CONTROLLERS, TSYNC_ESITE, 1, "missing [site] section", 1},
    {"missing name", true, "[site]\nretry_max_ms = 9000\n" CONTROLLERS, TSYNC_ESITE, 1,
     "[site]: missing required key 'name'", 1},
    {"no controller", true, "[site]\nname = t\n", TSYNC_ESITE, 1, "no [controller NAME] section", 1},

    /* keys */
    {"unknown key in thing", false, "[thing a]\nowner = A\ntype = bool\ncolour = red\n", TSYNC_ESITE, 15,
     "thing 'a': unknown key 'colour'", 1},
    {"unknown key in controller", false, "[controller D]\nhost = 127.0.0.1\nudp_port = 6004\nport = 1\n",
     TSYNC_ESITE, 15, "controller 'D': unknown key 'port'", 1},
    {"unknown key in [site]", true, "[site]\nname = t\nretries = 5\n" CONTROLLERS, TSYNC_ESITE, 3,
     "[site]: unknown key 'retries'", 1},
    {"duplicate scalar key", false, "[thing a]\nowner = A\nowner = B\ntype = bool\n", TSYNC_ESITE, 14,
     "thing 'a': duplicate key 'owner' (first at line 13)", 1},
    {"duplicate key in [site]", true, "[site]\nname = t\nname = u\n" CONTROLLERS, TSYNC_ESITE, 3,
     "duplicate key 'name' (first at line 2)", 1},
    {"scalar continued", false, "[thing a]\nowner = A\ntype = bool\ndriver = file:/x\n   more\n", TSYNC_ESITE,
     16, "the value of 'driver' continues on an indented line", 1},
    {"group too long", false,
     "[thing a]\nowner = A\ntype = bool\ngroup = a234567890123456789012345678901234567890123456789012345678901234\n",
     TSYNC_ESITE, 15, "thing 'a': group must be 1..63 characters", 1},
    {"key outside section", true, "foo = 1\n[site]\nname = t\n" CONTROLLERS, TSYNC_ESITE, 1,
     "key 'foo' outside of any section", 1},
    {"not a key line", false, "[thing a]\nowner = A\ntype = bool\nthis is not ini\n", TSYNC_ESITE, 15,
     "expected 'key = value'", 1},
    {"missing owner", false, "[thing a]\ntype = bool\n", TSYNC_ESITE, 12,
     "thing 'a': missing required key 'owner'", 1},
    {"missing type", false, "[thing a]\nowner = A\n", TSYNC_ESITE, 12,
     "thing 'a': missing required key 'type'", 1},
    {"empty thing section", false, "[thing a]\n[thing b]\nowner = A\ntype = bool\n", TSYNC_ESITE, 12,
     "thing 'a': missing required key 'owner'", 2},
    {"missing host", false, "[controller D]\nudp_port = 6004\n", TSYNC_ESITE, 12,
     "controller 'D': missing required key 'host'", 1},
    {"missing udp_port", false, "[controller D]\nhost = 10.0.0.1\n", TSYNC_ESITE, 12,
     "controller 'D': missing required key 'udp_port'", 1},

    /* controllers */
    {"udp_port not an integer", false, "[controller D]\nhost = 127.0.0.1\nudp_port = 60x\n", TSYNC_ESITE, 14,
     "udp_port = '60x' is not an integer", 1},
    {"udp_port out of range", false, "[controller D]\nhost = 127.0.0.1\nudp_port = 70000\n", TSYNC_ESITE, 14,
     "udp_port = 70000 is out of range 1..65535", 1},
    {"udp_port zero", false, "[controller D]\nhost = 127.0.0.1\nudp_port = 0\n", TSYNC_ESITE, 14,
     "out of range 1..65535", 1},
    {"tcp_port out of range", false, "[controller D]\nhost = 127.0.0.1\nudp_port = 6004\ntcp_port = -1\n",
     TSYNC_ESITE, 15, "tcp_port = -1 is out of range 0..65535", 1},
    {"tcp_port not an integer", false, "[controller D]\nhost = 127.0.0.1\nudp_port = 6004\ntcp_port = 80.5\n",
     TSYNC_ESITE, 15, "tcp_port = '80.5' is not an integer", 1},
    {"same host and port", false, "[controller D]\nhost = 127.0.0.1\nudp_port = 6002\n", TSYNC_ESITE, 14,
     "udp_port 6002 is already used by controller 'B' (line 6)", 1},
    {"same IPv6 address spelled twice", false,
     "[controller D]\nhost = ::1\nudp_port = 7000\n[controller E]\nhost = 0:0::1\nudp_port = 7000\n",
     TSYNC_ESITE, 17, "already used by controller 'D'", 1},
    {"bad host", false, "[controller D]\nhost = 192.168.1.300\nudp_port = 6004\n", TSYNC_ESITE, 13,
     "host '192.168.1.300' is neither an IP address nor a host name", 1},
    {"bad protocol", false, "[controller D]\nhost = 127.0.0.1\nudp_port = 6004\nprotocol = mqtt\n",
     TSYNC_ESITE, 15, "protocol 'mqtt'", 1},
    {"role twice", false, "[controller D]\nhost = 127.0.0.1\nudp_port = 6004\nroles = light, light\n",
     TSYNC_ESITE, 15, "role 'light' is listed twice", 1},

    /* things */
    {"unknown owner", false, "[thing porch_light]\nowner = PI-Garage\ntype = bool\n", TSYNC_ESITE, 13,
     "thing 'porch_light': owner 'PI-Garage' is not a controller", 1},
    {"user not a controller", false, "[thing a]\nowner = A\ntype = bool\nusers = B, Z\n", TSYNC_ESITE, 15,
     "thing 'a': user 'Z' is not a controller", 1},
    {"user twice", false, "[thing a]\nowner = A\ntype = bool\nusers = B, C, B\n", TSYNC_ESITE, 15,
     "thing 'a': user 'B' is listed twice", 1},
    {"user twice on two lines", false, "[thing a]\nowner = A\ntype = bool\nusers = B\nusers = C, B\n",
     TSYNC_ESITE, 16, "user 'B' is listed twice", 1},
    {"owner as user", false, "[thing a]\nowner = A\ntype = bool\nusers = B, A\n", TSYNC_ESITE, 15,
     "thing 'a': owner 'A' is also listed as a user", 1},
    {"empty user entry", false, "[thing a]\nowner = A\ntype = bool\nusers = B,,C\n", TSYNC_ESITE, 15,
     "empty entry in 'users'", 1},
    {"bad type", false, "[thing a]\nowner = A\ntype = boolean\n", TSYNC_ESITE, 14,
     "thing 'a': type 'boolean' is not one of bool, int, float, string", 1},
    {"bad bool settable", false, "[thing a]\nowner = A\ntype = bool\nsettable = maybe\n", TSYNC_ESITE, 15,
     "settable = 'maybe' is not a boolean", 1},
    {"bad bool pulse", false, "[thing a]\nowner = A\ntype = bool\npulse = 2\n", TSYNC_ESITE, 15,
     "pulse = '2' is not a boolean", 1},
    {"pulse_ms out of range", false, "[thing a]\nowner = A\ntype = bool\npulse = yes\npulse_ms = 0\n",
     TSYNC_ESITE, 16, "pulse_ms = 0 is out of range", 1},
    {"min > max", false, "[thing a]\nowner = A\ntype = int\nmin = 10\nmax = 5\n", TSYNC_ESITE, 15,
     "thing 'a': min (10) is greater than max (5)", 1},
    {"min on a string", false, "[thing a]\nowner = A\ntype = string\nmin = 1\n", TSYNC_ESITE, 15,
     "min is only allowed on int and float things", 1},
    {"max on a bool", false, "[thing a]\nowner = A\ntype = bool\nmax = 1\n", TSYNC_ESITE, 15,
     "max is only allowed on int and float things", 1},
    {"min not a number", false, "[thing a]\nowner = A\ntype = float\nmin = warm\n", TSYNC_ESITE, 15,
     "min = 'warm' is not a float", 1},
    {"int limit not an int", false, "[thing a]\nowner = A\ntype = int\nmax = 2.5\n", TSYNC_ESITE, 15,
     "max = '2.5' is not an int", 1},
    {"allowed on a bool", false, "[thing a]\nowner = A\ntype = bool\nallowed = yes, no\n", TSYNC_ESITE, 15,
     "allowed is only for string and int things", 1},
    {"allowed twice", false, "[thing a]\nowner = A\ntype = string\nallowed = on, off, on\n", TSYNC_ESITE, 15,
     "allowed value 'on' is listed twice", 1},
    {"allowed int not an int", false, "[thing a]\nowner = A\ntype = int\nallowed = 1, two\n", TSYNC_ESITE, 15,
     "allowed value 'two' is not an int", 1},
    {"initial not of the type", false, "[thing a]\nowner = A\ntype = int\ninitial = abc\n", TSYNC_ESITE, 15,
     "initial = 'abc' is not an int", 1},
    {"initial not a bool", false, "[thing a]\nowner = A\ntype = bool\ninitial = 2\n", TSYNC_ESITE, 15,
     "initial = '2' is not a bool", 1},
    {"initial above max", false, "[thing a]\nowner = A\ntype = int\nmin = 0\nmax = 100\ninitial = 150\n",
     TSYNC_ESITE, 17, "initial = '150': 150 is above max 100", 1},
    {"initial below min", false, "[thing a]\nowner = A\ntype = float\nmin = -5.5\ninitial = -6\n",
     TSYNC_ESITE, 16, "-6 is below min -5.5", 1},
    {"initial not allowed", false, "[thing a]\nowner = A\ntype = string\nallowed = off, eco\ninitial = hot\n",
     TSYNC_ESITE, 16, "'hot' is not one of the allowed values", 1},

    /* [site] settings */
    {"retry_max_ms not an integer", true, "[site]\nname = t\nretry_max_ms = 8s\n" CONTROLLERS, TSYNC_ESITE, 3,
     "[site]: retry_max_ms = '8s' is not an integer", 1},
    {"max_datagram too small", true, "[site]\nname = t\nmax_datagram = 100\n" CONTROLLERS, TSYNC_ESITE, 3,
     "max_datagram = 100 is out of range 256..65507", 1},
    {"max_outstanding too big", true, "[site]\nname = t\nmax_outstanding = 2000\n" CONTROLLERS, TSYNC_ESITE,
     3, "max_outstanding = 2000 is out of range 1..1024", 1},
    {"retry_min above retry_max", true,
     "[site]\nname = t\nretry_min_ms = 500\nretry_max_ms = 100\n" CONTROLLERS, TSYNC_ESITE, 4,
     "retry_max_ms (100) is below retry_min_ms (500)", 1},
    {"bad site name", true, "[site]\nname = my villa\n" CONTROLLERS, TSYNC_ESITE, 2,
     "[site]: name 'my villa' must be", 1},
    {"heartbeat_ms too short", true, "[site]\nname = t\nretry_max_ms = 900\nheartbeat_ms = 5\n" CONTROLLERS,
     TSYNC_ESITE, 4, "[site]: heartbeat_ms (5) must be 0 (off) or at least 10", 1},
    {"heartbeat_ms not an integer", true, "[site]\nname = t\nheartbeat_ms = 2s\n" CONTROLLERS, TSYNC_ESITE, 3,
     "[site]: heartbeat_ms = '2s' is not an integer", 1},
    {"heartbeat_ms too long", true, "[site]\nname = t\nheartbeat_ms = 4000000\n" CONTROLLERS, TSYNC_ESITE, 3,
     "heartbeat_ms = 4000000 is out of range 0..3600000", 1},

    /* key file (the file itself is absent here) */
    {"missing key file", true, "[site]\nname = t\nkey_file = nokey\n" CONTROLLERS, TSYNC_EKEY, 3,
     "does not exist", 1},
    {"empty key_file", true, "[site]\nname = t\nkey_file =\n" CONTROLLERS, TSYNC_EKEY, 3, "key_file is empty",
     1},
    {"key and site errors", true, "[site]\nname = t\nkey_file = nokey\n" CONTROLLERS "bogus = 1\n",
     TSYNC_ESITE, 3, "does not exist", 2},
};

/* ---- the example site ---------------------------------------------------- */

static void test_example(void **state)
{
	tsync_site *site = NULL;
	char *errors = (char *)"untouched";
	tsync_controller_info ci;
	tsync_thing_info ti;
	int i;

	(void)state;
	assert_int_equal(tsync_site_load(EXAMPLE, &site, &errors), 0);
	assert_null(errors);
	assert_non_null(site);
	assert_string_equal(tsync_site_name(site), "villa");
	assert_string_equal(tsync_site_path(site), EXAMPLE);
	assert_false(tsync_site_has_key(site));
	assert_int_equal(tsync_site_controller_count(site), 7);
	assert_int_equal(tsync_site_thing_count(site), 13);
	assert_int_equal(site->retry_max_ms, SITE_DEFAULT_RETRY_MAX_MS);
	assert_int_equal(site->heartbeat_ms, SITE_DEFAULT_HEARTBEAT_MS);
	assert_int_equal(site->max_datagram, SITE_DEFAULT_MAX_DATAGRAM);
	assert_int_equal(site->max_string, SITE_DEFAULT_MAX_STRING);

	i = tsync_site_controller_find(site, "PI-Light");
	assert_int_equal(i, 0);
	assert_int_equal(tsync_site_controller(site, (size_t)i, &ci), 0);
	assert_string_equal(ci.name, "PI-Light");
	assert_string_equal(ci.host, "127.0.0.1");
	assert_int_equal(ci.udp_port, 5101);
	assert_int_equal(ci.tcp_port, 8101);
	assert_int_equal(ci.n_roles, 2);
	assert_string_equal(ci.roles[0], "light");
	assert_string_equal(ci.roles[1], "cmd_do");
	assert_false(ci.seed_protocol);
	assert_true(ci.line > 0);

	i = tsync_site_controller_find(site, "SRV-Collector");
	assert_int_equal(i, 5);
	assert_int_equal(tsync_site_controller(site, 5, &ci), 0);
	assert_int_equal(ci.udp_port, 5106);
	assert_true(site__has_role(site, 5, "collector"));
	assert_true(site__has_role(site, 5, "push"));
	assert_false(site__has_role(site, 5, "light"));
	assert_false(site__has_role(site, 99, "push"));
	assert_int_equal(tsync_site_controller_find(site, "PI-Garage"), TSYNC_EUNKNOWN_CTRL);
	assert_false(site__has_role(site, 5, "recovery"));
	assert_true(site__has_role(site, 6, "recovery"));
	assert_int_equal(site->controllers[6].recovery_threshold_ms, 600000);
	assert_int_equal(tsync_site_controller(site, 7, &ci), -ERANGE);

	i = tsync_site_thing_find(site, "temp_living");
	assert_true(i >= 0);
	assert_int_equal(tsync_site_thing(site, (size_t)i, &ti), 0);
	assert_string_equal(ti.name, "temp_living");
	assert_string_equal(ti.owner, "PI-Climate");
	assert_int_equal(ti.type, TSYNC_TYPE_FLOAT);
	assert_int_equal(ti.n_users, 3);
	assert_string_equal(ti.users[0], "PI-Show");
	assert_string_equal(ti.users[1], "PI-Forensics");
	assert_string_equal(ti.users[2], "SRV-Collector");
	assert_false(ti.settable);
	assert_true(ti.has_min && ti.has_max);
	assert_true(ti.min == -40.0 && ti.max == 85.0);
	assert_int_equal(ti.initial.type, TSYNC_TYPE_NONE);
	assert_string_equal(ti.driver, "file:/sys/bus/w1/devices/28-000005e2fdc3/temperature");
	assert_string_equal(ti.group, "Living room");

	/* Two `users` lines append. */
	assert_int_equal(tsync_site_thing(site, (size_t)tsync_site_thing_find(site, "is_armed"), &ti), 0);
	assert_int_equal(ti.n_users, 5);
	assert_string_equal(ti.users[3], "PI-Forensics");
	assert_string_equal(ti.users[4], "SRV-Collector");
	assert_true(ti.settable);
	assert_int_equal(ti.initial.type, TSYNC_TYPE_BOOL);
	assert_false(ti.initial.u.b);

	assert_int_equal(tsync_site_thing(site, (size_t)tsync_site_thing_find(site, "door_strike"), &ti), 0);
	assert_true(ti.pulse);
	assert_int_equal(ti.pulse_ms, 1500);
	assert_int_equal(tsync_site_thing(site, (size_t)tsync_site_thing_find(site, "light_hall"), &ti), 0);
	assert_false(ti.pulse);
	assert_int_equal(ti.pulse_ms, SITE_DEFAULT_PULSE_MS);

	assert_int_equal(tsync_site_thing(site, (size_t)tsync_site_thing_find(site, "heating_mode"), &ti), 0);
	assert_int_equal(ti.type, TSYNC_TYPE_STRING);
	assert_int_equal(ti.n_allowed, 4);
	assert_string_equal(ti.allowed[2], "comfort");
	assert_int_equal(ti.initial.type, TSYNC_TYPE_STRING);
	assert_string_equal(ti.initial.u.s, "eco");

	assert_int_equal(tsync_site_thing(site, (size_t)tsync_site_thing_find(site, "internet_lost"), &ti),
	                 0);
	assert_string_equal(ti.owner, "SRV-Recovery");

	assert_int_equal(tsync_site_thing_find(site, "nope"), TSYNC_EUNKNOWN_THING);
	assert_int_equal(tsync_site_thing(site, 13, &ti), -ERANGE);
	tsync_site_free(site);
}

static bool list_has(const uint32_t *v, size_t n, uint32_t x)
{
	for (size_t i = 0; i < n; i++)
		if (v[i] == x)
			return true;
	return false;
}

#define THING(name) ((uint32_t)tsync_site_thing_find(site, name))
#define CTRL(name)  ((uint32_t)tsync_site_controller_find(site, name))

static void test_example_plan(void **state)
{
	tsync_site *site = NULL;
	struct site_plan *plan = NULL;
	const struct plan_peer *peer;
	uint32_t sec;

	(void)state;
	assert_int_equal(tsync_site_load(EXAMPLE, &site, NULL), 0);
	sec = CTRL("PI-Security");

	assert_int_equal(site__plan_new(site, sec, &plan), 0);
	assert_int_equal(plan->me, sec);
	assert_int_equal(plan->n_owned, 5);
	assert_true(list_has(plan->owned, plan->n_owned, THING("motion_hall")));
	assert_true(list_has(plan->owned, plan->n_owned, THING("door_strike")));
	assert_int_equal(plan->n_used, 4);
	assert_true(list_has(plan->used, plan->n_used, THING("light_hall")));
	assert_true(list_has(plan->used, plan->n_used, THING("heating_mode")));
	assert_true(list_has(plan->used, plan->n_used, THING("internet_lost")));
	assert_false(list_has(plan->used, plan->n_used, THING("temp_living")));

	assert_int_equal(plan->n_peers, 6);
	assert_int_equal(plan->peer_of_ctrl[sec], -1);
	for (size_t p = 0; p < plan->n_peers; p++) {
		assert_int_not_equal(plan->peers[p].ctrl, sec);
		assert_int_equal(plan->peer_of_ctrl[plan->peers[p].ctrl], (int32_t)p);
	}
	/* Peers come in site order, skipping me. */
	assert_int_equal(plan->peers[0].ctrl, CTRL("PI-Light"));
	assert_int_equal(plan->peers[1].ctrl, CTRL("PI-Climate"));

	peer = &plan->peers[plan->peer_of_ctrl[CTRL("PI-Light")]];
	assert_int_equal(peer->n_out, 3);
	assert_int_equal(peer->out[0], THING("motion_hall"));
	assert_int_equal(peer->out[1], THING("motion_garden"));
	assert_int_equal(peer->out[2], THING("is_armed"));
	assert_int_equal(peer->n_in, 2);
	assert_int_equal(peer->in[0], THING("light_hall"));
	assert_int_equal(peer->in[1], THING("light_garden"));

	peer = &plan->peers[plan->peer_of_ctrl[CTRL("PI-Show")]];
	assert_int_equal(peer->n_out, 3);
	assert_true(list_has(peer->out, peer->n_out, THING("alarm_siren")));
	assert_true(list_has(peer->out, peer->n_out, THING("door_strike")));
	assert_int_equal(peer->n_in, 0);

	peer = &plan->peers[plan->peer_of_ctrl[CTRL("SRV-Collector")]];
	assert_int_equal(peer->n_out, 1);
	assert_int_equal(peer->out[0], THING("is_armed"));
	assert_int_equal(peer->n_in, 0);

	peer = &plan->peers[plan->peer_of_ctrl[CTRL("SRV-Recovery")]];
	assert_int_equal(peer->n_out, 0);
	assert_int_equal(peer->n_in, 1);
	assert_int_equal(peer->in[0], THING("internet_lost"));
	site__plan_free(plan);

	/* The show panel owns nothing and uses a lot. */
	plan = NULL;
	assert_int_equal(site__plan_new(site, CTRL("PI-Show"), &plan), 0);
	assert_int_equal(plan->n_owned, 0);
	assert_int_equal(plan->n_used, 11);
	assert_false(list_has(plan->used, plan->n_used, THING("motion_hall")));
	peer = &plan->peers[plan->peer_of_ctrl[CTRL("PI-Climate")]];
	assert_int_equal(peer->n_out, 0);
	assert_int_equal(peer->n_in, 4);
	assert_int_equal(peer->in[0], THING("temp_living"));
	for (size_t p = 0; p < plan->n_peers; p++)
		assert_int_equal(plan->peers[p].n_out, 0);
	site__plan_free(plan);

	plan = (struct site_plan *)0x1;
	assert_int_equal(site__plan_new(site, 7, &plan), -ERANGE);
	assert_ptr_equal(plan, (struct site_plan *)0x1);
	site__plan_free(NULL);
	tsync_site_free(site);
}

/* ---- every bad case -------------------------------------------------------- */

static void test_bad_cases(void **state)
{
	struct tmp t;
	char text[4096];

	(void)state;
	tmp_make(&t);
	for (size_t i = 0; i < sizeof(bad_cases) / sizeof(bad_cases[0]); i++) {
		const struct bad_case *c = &bad_cases[i];
		tsync_site *site = NULL;
		char *errors = NULL;
		int rc;

		snprintf(text, sizeof(text), "%s%s", c->full ? "" : base, c->text);
		rc = load_text(&t, text, &site, &errors);
		if (rc != c->rc || !has_error(errors, t.conf, c->line, c->phrase) ||
		    (c->n_errors && count_lines(errors) != c->n_errors)) {
			print_error("case '%s': rc %d (want %d), want line %d '%s' (%zu errors), got:\n%s",
			            c->what, rc, c->rc, c->line, c->phrase, c->n_errors,
			            errors ? errors : "(null)\n");
			fail_msg("bad case '%s' failed", c->what);
		}
		if (getenv("TEST_SITE_VERBOSE"))
			print_message("%s:\n%s", c->what, errors);
		assert_null(site);
		free(errors);
	}
	tmp_clean(&t);
}

/* The base site itself is valid: the bad cases fail because of what they add. */
static void test_base_is_valid(void **state)
{
	struct tmp t;
	tsync_site *site = NULL;
	char *errors = NULL;

	(void)state;
	tmp_make(&t);
	assert_int_equal(load_text(&t, base, &site, &errors), 0);
	assert_null(errors);
	assert_int_equal(tsync_site_controller_count(site), 3);
	assert_int_equal(tsync_site_thing_count(site), 0);
	tsync_site_free(site);
	tmp_clean(&t);
}

/* heartbeat_ms: 0 turns heartbeats off, any other value is the period. */
static void test_heartbeat_setting(void **state)
{
	struct tmp t;
	tsync_site *site = NULL;
	char *errors = NULL;

	(void)state;
	tmp_make(&t);
	assert_int_equal(load_text(&t, "[site]\nname = t\nheartbeat_ms = 0\n" CONTROLLERS, &site, &errors),
	                 0);
	assert_int_equal(site->heartbeat_ms, 0);
	tsync_site_free(site);
	assert_int_equal(load_text(&t, "[site]\nname = t\nheartbeat_ms = 10\n" CONTROLLERS, &site, &errors),
	                 0);
	assert_int_equal(site->heartbeat_ms, 10);
	tsync_site_free(site);
	tmp_clean(&t);
}

/* The forensics keys: report_command split into argv without a shell, and
 * refused, with its line, when it holds what only a shell would read. */
static void test_forensics_keys(void **state)
{
	struct tmp t;
	tsync_site *site = NULL;
	char *errors = NULL;

	(void)state;
	tmp_make(&t);
	assert_int_equal(load_text(&t,
	                           "[site]\nname = t\nforensic_days = 30\nreport_timeout_ms = 500\n"
	                           "report_command = /usr/sbin/sendmail  -t\t-i\n" CONTROLLERS,
	                           &site, &errors),
	                 0);
	assert_int_equal(site->forensic_days, 30);
	assert_int_equal(site->report_timeout_ms, 500);
	assert_string_equal(site->report_command[0], "/usr/sbin/sendmail");
	assert_string_equal(site->report_command[1], "-t");
	assert_string_equal(site->report_command[2], "-i");
	assert_null(site->report_command[3]);
	tsync_site_free(site);
	site = NULL;
	assert_int_equal(load_text(&t, "[site]\nname = t\n" CONTROLLERS, &site, &errors), 0);
	assert_null(site->report_command);
	assert_int_equal(site->forensic_days, SITE_DEFAULT_FORENSIC_DAYS);
	tsync_site_free(site);
	site = NULL;
	assert_int_equal(load_text(&t, "[site]\nname = t\nreport_command = /bin/mail $ADMIN; rm -rf /\n"
	                               "forensic_days = 0\n" CONTROLLERS,
	                           &site, &errors),
	                 TSYNC_ESITE);
	assert_true(has_error(errors, t.conf, 3, "report_command"));
	assert_true(has_error(errors, t.conf, 4, "forensic_days"));
	free(errors);
	errors = NULL;
	assert_int_equal(load_text(&t, "[site]\nname = t\nreport_command = mail\n" CONTROLLERS, &site, &errors),
	                 TSYNC_ESITE);
	assert_true(has_error(errors, t.conf, 3, "absolute program path"));
	free(errors);
	tmp_clean(&t);
}

static void test_many_errors_sorted(void **state)
{
	static const char extra[] = "[thing a]\n"        /* 12 */
	                            "owner = Nobody\n"   /* 13 */
	                            "type = colour\n"    /* 14 */
	                            "[controller D]\n"   /* 15 */
	                            "host = 127.0.0.1\n" /* 16 */
	                            "udp_port = 99999\n" /* 17 */
	                            "[thing b]\n"        /* 18 */
	                            "owner = A\n"        /* 19 */
	                            "type = bool\n"      /* 20 */
	                            "users = X\n";       /* 21 */
	struct tmp t;
	tsync_site *site = NULL;
	char *errors = NULL;
	char text[1024];
	const char *p13, *p14, *p17, *p21;

	(void)state;
	tmp_make(&t);
	snprintf(text, sizeof(text), "%s%s", base, extra);
	assert_int_equal(load_text(&t, text, &site, &errors), TSYNC_ESITE);
	assert_null(site);
	assert_non_null(errors);
	assert_int_equal(count_lines(errors), 4);
	assert_true(has_error(errors, t.conf, 13, "owner 'Nobody' is not a controller"));
	assert_true(has_error(errors, t.conf, 14, "type 'colour'"));
	assert_true(has_error(errors, t.conf, 17, "udp_port = 99999"));
	assert_true(has_error(errors, t.conf, 21, "user 'X' is not a controller"));
	/* Controllers are checked before things, but the report follows the file. */
	p13 = strstr(errors, ":13: ");
	p14 = strstr(errors, ":14: ");
	p17 = strstr(errors, ":17: ");
	p21 = strstr(errors, ":21: ");
	assert_true(p13 && p14 && p17 && p21);
	assert_true(p13 < p14 && p14 < p17 && p17 < p21);
	free(errors);
	tmp_clean(&t);
}

static void test_unreadable(void **state)
{
	tsync_site *site = NULL;
	char *errors = NULL;

	(void)state;
	assert_int_equal(tsync_site_load("/nonexistent/site.conf", &site, &errors), -ENOENT);
	assert_null(site);
	assert_non_null(errors);
	assert_non_null(strstr(errors, "/nonexistent/site.conf: cannot read"));
	free(errors);
	assert_int_equal(tsync_site_load("/tmp", &site, NULL), -EISDIR);
	assert_int_equal(tsync_site_load(NULL, &site, NULL), -EINVAL);
}

static void test_long_line(void **state)
{
	struct tmp t;
	tsync_site *site = NULL;
	char *errors = NULL;
	char text[2048];
	char longval[400];

	(void)state;
	tmp_make(&t);
	memset(longval, 'x', sizeof(longval) - 1);
	longval[sizeof(longval) - 1] = '\0';
	/* The long value would be cut by inih; it is reported, not truncated silently. */
	snprintf(text, sizeof(text), "%s[thing a]\nowner = A\ntype = string\ndriver = %s\ninitial = y\n",
	         base, longval);
	assert_int_equal(load_text(&t, text, &site, &errors), TSYNC_ESITE);
	assert_true(has_error(errors, t.conf, 15, "line is too long"));
	/* Parsing goes on after it, with line numbers intact. */
	assert_int_equal(count_lines(errors), 1);
	free(errors);
	errors = NULL;

	/* 197 characters fit. */
	memset(longval, 'x', 197 - strlen("driver = "));
	longval[197 - strlen("driver = ")] = '\0';
	snprintf(text, sizeof(text), "%s[thing a]\nowner = A\ntype = string\ndriver = %s\n", base, longval);
	assert_int_equal(load_text(&t, text, &site, &errors), 0);
	assert_int_equal(tsync_site_thing(site, 0, NULL), -EINVAL);
	assert_string_equal(site->things[0].driver, longval);
	tsync_site_free(site);
	tmp_clean(&t);
}

/* What inih alone gets wrong: names longer than its 49-byte section buffer. */
static void test_long_names_and_lists(void **state)
{
	static const char name63[] = "a23456789012345678901234567890123456789012345678901234567890123";
	struct tmp t;
	tsync_site *site = NULL;
	char *errors = NULL;
	char text[2048];
	tsync_thing_info ti;
	tsync_controller_info ci;

	(void)state;
	tmp_make(&t);
	snprintf(text, sizeof(text),
	         "%s"
	         "[thing %s]\n"
	         "owner = A\n"
	         "type = int\n"
	         "users = B,\n"
	         "   C\n"
	         "allowed = 1, 2, 5\n"
	         "initial = 5\n"
	         "[controller D]\n"
	         "host = localhost\n"
	         "udp_port = 6004\n"
	         "roles = x\n"
	         "  y, z ; inline comment\n"
	         "protocol = seed\n"
	         "[thing %s-2]\n" /* differs from the first only after byte 49 of the header */
	         "owner = D\n"
	         "type = float\n"
	         "users = A\n",
	         base, name63, "a234567890123456789012345678901234567890123456789012345678901");
	assert_int_equal(load_text(&t, text, &site, &errors), 0);
	assert_null(errors);
	assert_int_equal(tsync_site_thing_count(site), 2);
	assert_int_equal(tsync_site_thing(site, (size_t)tsync_site_thing_find(site, name63), &ti), 0);
	assert_int_equal(ti.line, 12);
	assert_int_equal(ti.n_users, 2);
	assert_string_equal(ti.users[1], "C");
	assert_int_equal(ti.n_allowed, 3);
	assert_int_equal(ti.initial.type, TSYNC_TYPE_INT);
	assert_int_equal(ti.initial.u.i, 5);
	assert_int_equal(tsync_site_controller(site, 3, &ci), 0);
	assert_string_equal(ci.host, "localhost");
	assert_int_equal(ci.n_roles, 3);
	assert_string_equal(ci.roles[2], "z");
	assert_true(ci.seed_protocol);
	assert_int_equal(ci.tcp_port, 0);

	/* An int thing with allowed values takes only those. */
	assert_int_equal(
	    tsync_site_check_value(site, name63, &(tsync_value){.type = TSYNC_TYPE_INT, .u.i = 2}), 0);
	assert_int_equal(
	    tsync_site_check_value(site, name63, &(tsync_value){.type = TSYNC_TYPE_INT, .u.i = 3}),
	    TSYNC_EVALUE);
	tsync_site_free(site);
	tmp_clean(&t);
}

/* A file saved by a Windows editor: a byte-order mark and CRLF line ends. */
static void test_bom_crlf(void **state)
{
	struct tmp t;
	tsync_site *site = NULL;
	char *errors = NULL;

	(void)state;
	tmp_make(&t);
	assert_int_equal(load_text(&t,
	                           "\xEF\xBB\xBF[site]\r\nname = w\r\n[controller A]\r\nhost = 10.0.0.1\r\n"
	                           "udp_port = 6001\r\n[thing a]\r\nowner = A\r\ntype = string\r\n"
	                           "initial = on\r\n",
	                           &site, &errors),
	                 0);
	assert_null(errors);
	assert_string_equal(tsync_site_name(site), "w");
	assert_string_equal(site->things[0].initial.u.s, "on");
	tsync_site_free(site);

	assert_int_equal(load_text(&t,
	                           "\xEF\xBB\xBF[site]\r\nname = w\r\n[controller A]\r\nhost = 10.0.0.1\r\n"
	                           "udp_port = x\r\n",
	                           &site, &errors),
	                 TSYNC_ESITE);
	assert_true(has_error(errors, t.conf, 5, "udp_port = 'x' is not an integer"));
	free(errors);
	tmp_clean(&t);
}

/* ---- check_value ------------------------------------------------------------ */

static void test_check_value(void **state)
{
	tsync_site *site = NULL;
	struct tmp t;
	tsync_value v;

	(void)state;
	assert_int_equal(tsync_site_load(EXAMPLE, &site, NULL), 0);

	v = tsync_bool(true);
	assert_int_equal(tsync_site_check_value(site, "is_armed", &v), 0);
	v = tsync_bool(false);
	assert_int_equal(tsync_site_check_value(site, "is_armed", &v), 0);
	v = tsync_int(1);
	assert_int_equal(tsync_site_check_value(site, "is_armed", &v), TSYNC_EVALUE);
	v = tsync_string("on");
	assert_int_equal(tsync_site_check_value(site, "is_armed", &v), TSYNC_EVALUE);

	v = tsync_float(21.5);
	assert_int_equal(tsync_site_check_value(site, "temp_living", &v), 0);
	v = tsync_int(21); /* an int is fine for a float thing */
	assert_int_equal(tsync_site_check_value(site, "temp_living", &v), 0);
	v = tsync_float(85.0);
	assert_int_equal(tsync_site_check_value(site, "temp_living", &v), 0);
	v = tsync_float(85.01);
	assert_int_equal(tsync_site_check_value(site, "temp_living", &v), TSYNC_EVALUE);
	v = tsync_int(-41);
	assert_int_equal(tsync_site_check_value(site, "temp_living", &v), TSYNC_EVALUE);
	v = tsync_float(NAN);
	assert_int_equal(tsync_site_check_value(site, "temp_living", &v), TSYNC_EVALUE);
	v = tsync_float(INFINITY);
	assert_int_equal(tsync_site_check_value(site, "temp_living", &v), TSYNC_EVALUE);
	v = tsync_bool(true);
	assert_int_equal(tsync_site_check_value(site, "temp_living", &v), TSYNC_EVALUE);

	v = tsync_int(100);
	assert_int_equal(tsync_site_check_value(site, "power_w", &v), 0);
	v = tsync_int(-1);
	assert_int_equal(tsync_site_check_value(site, "power_w", &v), TSYNC_EVALUE);
	v = tsync_int(50001);
	assert_int_equal(tsync_site_check_value(site, "power_w", &v), TSYNC_EVALUE);
	v = tsync_float(100.0); /* but a float is not an int */
	assert_int_equal(tsync_site_check_value(site, "power_w", &v), TSYNC_EVALUE);

	v = tsync_string("comfort");
	assert_int_equal(tsync_site_check_value(site, "heating_mode", &v), 0);
	v = tsync_string("hot");
	assert_int_equal(tsync_site_check_value(site, "heating_mode", &v), TSYNC_EVALUE);
	v = tsync_string(NULL);
	assert_int_equal(tsync_site_check_value(site, "heating_mode", &v), TSYNC_EVALUE);
	v = tsync_int(1);
	assert_int_equal(tsync_site_check_value(site, "heating_mode", &v), TSYNC_EVALUE);

	assert_int_equal(tsync_site_check_value(site, "nope", &v), TSYNC_EUNKNOWN_THING);
	assert_int_equal(tsync_site_check_value(site, "is_armed", NULL), TSYNC_EVALUE);
	tsync_site_free(site);

	/* max_string bounds a free string. */
	tmp_make(&t);
	write_file(t.conf,
	           "[site]\nname = s\nmax_string = 16\n" CONTROLLERS
	           "[thing label]\nowner = A\ntype = string\n",
	           0644);
	assert_int_equal(tsync_site_load(t.conf, &site, NULL), 0);
	v = tsync_string("0123456789abcdef");
	assert_int_equal(tsync_site_check_value(site, "label", &v), 0);
	v = tsync_string("0123456789abcdefg");
	assert_int_equal(tsync_site_check_value(site, "label", &v), TSYNC_EVALUE);
	v = tsync_string("");
	assert_int_equal(tsync_site_check_value(site, "label", &v), 0);
	tsync_site_free(site);
	tmp_clean(&t);
}

/* ---- the key file ------------------------------------------------------------- */

static const char good_hex[] = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

static void key_case(const char *key_text, mode_t mode, int want_rc, const char *phrase)
{
	struct tmp t;
	char keypath[256];
	tsync_site *site = NULL;
	char *errors = NULL;
	int rc;

	tmp_make(&t);
	snprintf(keypath, sizeof(keypath), "%s/site.key", t.dir);
	write_file(keypath, key_text, mode);
	rc = load_text(&t, "[site]\nname = k\nkey_file = site.key\n" CONTROLLERS, &site, &errors);
	if (rc != want_rc || (phrase && !has_error(errors, t.conf, 3, phrase))) {
		print_error("key %s mode %o: rc %d, errors:\n%s", key_text, (unsigned)mode, rc,
		            errors ? errors : "(null)\n");
		fail();
	}
	if (want_rc == 0) {
		assert_null(errors);
		assert_true(tsync_site_has_key(site));
		for (int i = 0; i < SITE_KEY_BYTES; i++)
			assert_int_equal(site->key[i], i);
		assert_string_equal(site->key_file, keypath);
	} else {
		assert_null(site);
	}
	tsync_site_free(site);
	free(errors);
	tmp_clean(&t);
}

static void test_key_file(void **state)
{
	char upper[sizeof(good_hex) + 1];

	(void)state;
	key_case("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\n", 0600, 0, NULL);
	key_case(good_hex, 0400, 0, NULL); /* no newline */
	snprintf(upper, sizeof(upper), "%s\n", good_hex);
	for (char *p = upper; *p; p++)
		if (*p >= 'a' && *p <= 'f')
			*p = (char)(*p - 'a' + 'A');
	key_case(upper, 0600, 0, NULL);

	key_case(good_hex, 0644, TSYNC_EKEY, "accessible by group or others (mode 0644)");
	key_case(good_hex, 0640, TSYNC_EKEY, "accessible by group or others");
	key_case(good_hex, 0602, TSYNC_EKEY, "accessible by group or others");
	key_case("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1g\n", 0600, TSYNC_EKEY,
	         "malformed");
	key_case("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e\n", 0600, TSYNC_EKEY,
	         "malformed");
	key_case("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f00\n", 0600, TSYNC_EKEY,
	         "malformed");
	key_case("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\n\n", 0600, TSYNC_EKEY,
	         "malformed");
	key_case("00:01:02:03:04:05:06:07:08:09:0a:0b:0c:0d:0e:0f:10:11:12:13:14:15\n", 0600, TSYNC_EKEY,
	         "malformed");
	key_case("", 0600, TSYNC_EKEY, "malformed");
}

static void test_read_key_direct(void **state)
{
	struct tmp t;
	char path[256];
	char why[256];
	uint8_t key[SITE_KEY_BYTES];

	(void)state;
	tmp_make(&t);
	snprintf(path, sizeof(path), "%s/k", t.dir);
	assert_int_equal(site__read_key(path, key, why, sizeof(why)), TSYNC_EKEY);
	assert_non_null(strstr(why, "does not exist"));
	write_file(path, good_hex, 0604);
	assert_int_equal(site__read_key(path, key, why, sizeof(why)), TSYNC_EKEY);
	assert_non_null(strstr(why, "chmod 600"));
	assert_int_equal(chmod(path, 0600), 0);
	why[0] = 'x';
	assert_int_equal(site__read_key(path, key, why, sizeof(why)), 0);
	assert_int_equal(why[0], '\0');
	assert_int_equal(key[31], 31);
	assert_int_equal(site__read_key(t.dir, key, why, sizeof(why)), TSYNC_EKEY);
	tmp_clean(&t);
}

static void test_key_generate(void **state)
{
	struct tmp t;
	char path[256], path2[256], conf[512];
	uint8_t k1[SITE_KEY_BYTES], k2[SITE_KEY_BYTES];
	char why[256];
	struct stat st;
	tsync_site *site = NULL;
	char *errors = NULL;

	(void)state;
	tmp_make(&t);
	snprintf(path, sizeof(path), "%s/gen.key", t.dir);
	snprintf(path2, sizeof(path2), "%s/gen2.key", t.dir);
	assert_int_equal(tsync_key_generate(path), 0);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0600);
	assert_int_equal(st.st_size, 65);
	assert_int_equal(tsync_key_generate(path), -EEXIST);
	assert_int_equal(tsync_key_generate("/nonexistent/dir/k"), -ENOENT);
	assert_int_equal(tsync_key_generate(path2), 0);

	assert_int_equal(site__read_key(path, k1, why, sizeof(why)), 0);
	assert_int_equal(site__read_key(path2, k2, why, sizeof(why)), 0);
	assert_memory_not_equal(k1, k2, sizeof(k1));

	/* A site using it, by absolute path this time. */
	snprintf(conf, sizeof(conf), "[site]\nname = g\nkey_file = %s\n" CONTROLLERS, path);
	assert_int_equal(load_text(&t, conf, &site, &errors), 0);
	assert_null(errors);
	assert_true(tsync_site_has_key(site));
	assert_memory_equal(site->key, k1, sizeof(k1));

	/* Signing with the site key: verified by the same key, not by another,
	 * and not after the data changed. */
	{
		uint8_t tag[TSYNC_TAG_BYTES];
		tsync_site *other = NULL, *nokey = NULL;
		const char data[] = "[site]\nname = deployed\n";
		assert_int_equal(tsync_site_sign(site, data, sizeof(data), tag), 0);
		assert_int_equal(tsync_site_verify(site, data, sizeof(data), tag), 0);
		assert_int_equal(tsync_site_verify(site, data, sizeof(data) - 1, tag), -EBADMSG);
		snprintf(conf, sizeof(conf), "[site]\nname = g\nkey_file = %s\n" CONTROLLERS, path2);
		assert_int_equal(load_text(&t, conf, &other, &errors), 0);
		assert_int_equal(tsync_site_verify(other, data, sizeof(data), tag), -EBADMSG);
		snprintf(conf, sizeof(conf), "[site]\nname = g\n" CONTROLLERS);
		assert_int_equal(load_text(&t, conf, &nokey, &errors), 0);
		assert_int_equal(tsync_site_sign(nokey, data, sizeof(data), tag), TSYNC_EKEY);
		assert_int_equal(tsync_site_sign(NULL, data, sizeof(data), tag), -EINVAL);
		tsync_site_free(other);
		tsync_site_free(nokey);
	}
	tsync_site_free(site);
	tmp_clean(&t);
}

/* tsync_sha256_hex (libcrypto): the standard's vectors (FIPS 180-2 B.1-B.3), lengths around a
 * block's edges, and, on random inputs, the same digest as libsodium's SHA-256 (used before). */
static void test_sha256_hex(void **state)
{
	static const struct {
		const char *in;
		size_t repeat;
		const char *hex;
	} known[] = {
	    {"", 1, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
	    {"abc", 1, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
	    {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq", 1,
	     "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
	    {"a", 1000000, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"},
	};
	char hex[TSYNC_HEX_BYTES + 1], want[TSYNC_HEX_BYTES + 1];
	uint8_t h[crypto_hash_sha256_BYTES];
	size_t max = 1 << 20;
	uint8_t *buf = malloc(max);

	(void)state;
	assert_non_null(buf);
	assert_int_equal(sodium_init() < 0, 0);
	for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++) {
		size_t n = strlen(known[i].in), len = n * known[i].repeat;
		for (size_t k = 0; k < known[i].repeat; k++)
			memcpy(buf + k * n, known[i].in, n);
		tsync_sha256_hex(buf, len, hex);
		assert_string_equal(hex, known[i].hex);
	}
	tsync_sha256_hex(NULL, 0, hex);
	assert_string_equal(hex, known[0].hex);
	tsync_sha256_hex(NULL, 1, hex);
	assert_string_equal(hex, "");
	/* Every length up to three blocks and a bit (the padding's cases), then random ones. */
	for (size_t i = 0; i < 2200; i++) {
		size_t len = i < 200 ? i : (size_t)randombytes_uniform(i < 2000 ? 70000 : (uint32_t)max);
		randombytes_buf(buf, len);
		crypto_hash_sha256(h, buf, len);
		sodium_bin2hex(want, sizeof(want), h, sizeof(h));
		tsync_sha256_hex(buf, len, hex);
		assert_string_equal(hex, want);
	}
	free(buf);
}

static void test_null_safety(void **state)
{
	tsync_controller_info ci;

	(void)state;
	tsync_site_free(NULL);
	assert_null(tsync_site_name(NULL));
	assert_false(tsync_site_has_key(NULL));
	assert_int_equal(tsync_site_controller_count(NULL), 0);
	assert_int_equal(tsync_site_controller(NULL, 0, &ci), -EINVAL);
	assert_int_equal(tsync_site_controller_find(NULL, "A"), TSYNC_EUNKNOWN_CTRL);
	assert_int_equal(tsync_site_thing_find(NULL, "a"), TSYNC_EUNKNOWN_THING);
	assert_int_equal(tsync_key_generate(NULL), -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_example),
	    cmocka_unit_test(test_example_plan),
	    cmocka_unit_test(test_base_is_valid),
	    cmocka_unit_test(test_heartbeat_setting),
	    cmocka_unit_test(test_forensics_keys),
	    cmocka_unit_test(test_bad_cases),
	    cmocka_unit_test(test_many_errors_sorted),
	    cmocka_unit_test(test_unreadable),
	    cmocka_unit_test(test_long_line),
	    cmocka_unit_test(test_long_names_and_lists),
	    cmocka_unit_test(test_bom_crlf),
	    cmocka_unit_test(test_check_value),
	    cmocka_unit_test(test_key_file),
	    cmocka_unit_test(test_read_key_direct),
	    cmocka_unit_test(test_key_generate),
	    cmocka_unit_test(test_sha256_hex),
	    cmocka_unit_test(test_null_safety),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
