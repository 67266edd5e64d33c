# Included by CMake right after llama.cpp's own project() call (CMAKE_PROJECT_llama.cpp_INCLUDE, set in the
# Makefile's LLAMA_CMAKE_ARGS). llama-cpp-python force-sets the cache variable LLAMA_BUILD_COMMON to ON, so a
# -D on the command line cannot turn it off; a normal variable in llama.cpp's directory scope shadows the cache
# entry (and option() keeps it, policy CMP0077). The common library (53 of 127 compile units, the slowest: JSON,
# Jinja, an HTTP client) serves llama.cpp's own programs and the multimodal library; the Python package loads
# only libllama and libggml, and libllama does not link it.
set(LLAMA_BUILD_COMMON OFF)
