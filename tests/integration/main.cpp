#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include "harness.hpp"

int main(int argc, char **argv)
{
	if (!msharefs::test::enter_test_namespace())
		return 77; // skipped
	doctest::Context context(argc, argv);
	return context.run();
}
