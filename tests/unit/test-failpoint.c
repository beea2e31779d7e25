/* Test failpoints: the RESYNC_FAILPOINT grammar, the Nth hit, the error
 * action, and the kill and exit actions in a child process. */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "resync/failpoint.h"
#include "testlib.h"

static void test_failpoint_off(void **state)
{
	(void)state;
	assert_int_equal(failpoint_parse(NULL), 0);
	assert_false(failpoint_armed);
	assert_int_equal(FAILPOINT("a"), 0);
	assert_false(failpoint_named("a"));
	assert_int_equal(failpoint_parse(""), 0);
	assert_false(failpoint_armed);
}

static void test_failpoint_error_nth(void **state)
{
	(void)state;
	assert_int_equal(failpoint_parse("a:error:3,b:error,c"), 0);
	assert_true(failpoint_armed);
	assert_true(failpoint_named("a") && failpoint_named("b") && failpoint_named("c"));
	assert_false(failpoint_named("d"));
	assert_int_equal(FAILPOINT("a"), 0);
	assert_int_equal(FAILPOINT("a"), 0);
	assert_int_equal(FAILPOINT("a"), -EIO); /* the third hit */
	assert_int_equal(FAILPOINT("a"), 0);	/* once only */
	assert_int_equal(FAILPOINT("b"), -EIO);
	assert_int_equal(FAILPOINT("b"), 0);
	assert_int_equal(FAILPOINT("d"), 0);
	/* Parsed again: the counts start over. */
	assert_int_equal(failpoint_parse("a:error:1"), 0);
	assert_int_equal(FAILPOINT("a"), -EIO);
	assert_int_equal(failpoint_parse(NULL), 0);
}

static void test_failpoint_gate(void **state)
{
	(void)state;
	assert_int_equal(failpoint_parse("m:error:2@g,n:error@g"), 0);
	assert_int_equal(FAILPOINT("m"), 0); /* before the gate: not counted */
	assert_int_equal(FAILPOINT("m"), 0);
	assert_int_equal(FAILPOINT("m"), 0);
	assert_int_equal(FAILPOINT("g"), 0); /* a gate alone does nothing */
	assert_int_equal(FAILPOINT("m"), 0);
	assert_int_equal(FAILPOINT("m"), -EIO); /* the second hit past g */
	assert_int_equal(FAILPOINT("n"), -EIO);
	assert_int_equal(failpoint_parse(NULL), 0);
}

static int failpoint_return(void)
{
	FAILPOINT_RETURN("r");
	return 7;
}

static void test_failpoint_return(void **state)
{
	(void)state;
	assert_int_equal(failpoint_parse("r:error:2"), 0);
	assert_int_equal(failpoint_return(), 7);
	assert_int_equal(failpoint_return(), -EIO);
	assert_int_equal(failpoint_return(), 7);
	assert_int_equal(failpoint_parse(NULL), 0);
}

static void test_failpoint_malformed(void **state)
{
	static const char *bad[] = {
	    ",",
	    "a,",
	    ":kill",
	    "a:",
	    "a:crash",
	    "a:kill:",
	    "a:kill:0",
	    "a:kill:-1",
	    "a:kill:x",
	    "a:kill:1:2",
	    "a:error:99999999999999999999999",
	    "0123456789012345678901234567890123456789012345678901234567890123456789",
	    "a,b,c,d,e,f,g,h,i,j,k,l,m,n,o,p,q",
	    "a@",
	    "a@g:kill",
	    "a@g@h",
	    "@g",
	};

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(failpoint_parse(bad[i]), -EINVAL);
		/* A malformed value arms nothing. */
		assert_false(failpoint_armed);
		assert_false(failpoint_named("a"));
	}
}

/* The action's end of a child that reaches the failpoint "x". */
static int child_status(const char *spec)
{
	int st;
	pid_t pid = fork();

	assert_true(pid >= 0);
	if (pid == 0) {
		if (failpoint_parse(spec) < 0)
			_exit(2);
		(void)FAILPOINT("y");
		(void)FAILPOINT("x");
		_exit(0);
	}
	assert_int_equal(waitpid(pid, &st, 0), pid);
	return st;
}

static void test_failpoint_kill_exit(void **state)
{
	int st;

	(void)state;
	st = child_status("x");
	assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
	st = child_status("x:kill");
	assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
	st = child_status("x:exit");
	assert_true(WIFEXITED(st) && WEXITSTATUS(st) == FAILPOINT_EXIT_CODE);
	st = child_status("x:kill:2"); /* reached once: nothing */
	assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	st = child_status("z");
	assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_failpoint_off),	cmocka_unit_test(test_failpoint_error_nth),
	    cmocka_unit_test(test_failpoint_gate),	cmocka_unit_test(test_failpoint_return),
	    cmocka_unit_test(test_failpoint_malformed), cmocka_unit_test(test_failpoint_kill_exit),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
