// Unit ball centred at the origin, tetrahedra of size about h.
// Regenerate: python scripts/make_meshes.py  (or: gmsh -3 ball.geo -format msh41 -o ball.msh)
SetFactory("OpenCASCADE");
h = 0.2;
Sphere(1) = {0, 0, 0, 1};
Mesh.MeshSizeMin = h;
Mesh.MeshSizeMax = h;
Mesh.MeshSizeFromCurvature = 0;
Physical Surface("boundary", 1) = {1};
Physical Volume("domain", 2) = {1};
