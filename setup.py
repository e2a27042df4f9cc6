from glob import glob

from setuptools import find_packages, setup

PACKAGE = "ros_vilasr"

setup(
    name=PACKAGE,
    version="0.1.0",
    description="ViLaSR draw-to-reason spatial reasoning: ROS 2 node and ROS-free core",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    package_data={f"{PACKAGE}.core": ["data/*"], f"{PACKAGE}.demo": ["data/*", "data/*/*"],
                  PACKAGE: ["models/embedded/*"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.py")),
        (f"share/{PACKAGE}/config", glob("config/*")),
    ],
    # ROS dependencies (rclpy, messages) come from package.xml / the ROS installation; the core
    # needs only these, so training and evaluation machines need no ROS.
    install_requires=["numpy", "pillow", "transformers>=5.18,<5.21", "tqdm", "pyyaml", "matplotlib"],
    extras_require={"bags": ["rosbags"]},
    entry_points={
        "console_scripts": [
            "vilasr = ros_vilasr.cli:main",
            "vilasr_node = ros_vilasr.node.main:main",
            "vilasr_bag_player = ros_vilasr.node.bag_player:main",
        ],
    },
)
