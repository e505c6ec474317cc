"""Student notebooks and autograding with nbgrader (`make student`, `make grade`): see grade.py."""
